"""Weight initialisation from one seeded generator, so that a run is reproducible.

`manual_seed(s)` resets the generator; layers draw their initial weights from it on the CPU
(`Module.to("cuda")` moves them afterwards), so the same seed gives the same network on both
backends.
"""
import math

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reset the generator that every layer's initial weights come from."""
    global _generator
    _generator = np.random.default_rng(seed)


def kaiming_normal(shape, fan_in, gain=math.sqrt(2.0), dtype=np.float32):
    """He initialisation: N(0, gain^2 / fan_in), right for layers followed by ReLU."""
    return (_generator.standard_normal(shape) * (gain / math.sqrt(fan_in))).astype(dtype)


def normal(shape, std, dtype=np.float32):
    """N(0, std^2); the paper initialises its new layers with std 0.01."""
    return (_generator.standard_normal(shape) * std).astype(dtype)


def uniform(shape, bound, dtype=np.float32):
    """U(-bound, bound): PyTorch's default for a conv bias (bound = 1/sqrt(fan_in))."""
    return _generator.uniform(-bound, bound, shape).astype(dtype)
