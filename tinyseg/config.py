"""Run-time switches, in one object, scoped with a context manager (Chainer's `using_config`).

    from tinyseg.config import config, using_config

    config.impl                      # "fast" (the default) or "reference"
    with using_config(impl="reference"):
        y = F.conv2d(x, w)           # the plain whole-array op of tinyseg/functional/

impl          "fast": each op that has a twin in tinyseg/fast/ runs it (tinyseg/fast/__init__.py
              is the dispatch table); "reference": every op runs the textbook version in
              tinyseg/functional/. Both give the same numbers up to float rounding.
cuda_kernels  on the GPU with impl "fast": the hand-written CUDA kernels of
              tinyseg/fast/cuda_kernels.py (off by default until a GPU session has timed them);
              without them the GPU runs the reference ops, whole arrays on CuPy.

The environment only seeds the defaults (TINYSEG_IMPL=reference, TINYSEG_CUDA_KERNELS=1), so a
script can be switched without editing it; command lines set them with --impl and
--cuda-kernels, and code with `using_config`, which restores the old values on the way out.
"""
import contextlib
import os
import sys
import warnings

IMPLS = ("fast", "reference")
SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False, "": False}


class Config:
    """The switches above, checked when set. A bad value in the environment falls back to the
    default with a warning (importing tinyseg must not fail); the command lines refuse it."""

    def __init__(self):
        self.env_error = None
        impl = os.environ.get("TINYSEG_IMPL", "fast")
        kernels = os.environ.get("TINYSEG_CUDA_KERNELS", "0").strip().lower()
        if impl not in IMPLS:
            self.env_error = f"TINYSEG_IMPL={impl!r}: choose one of {', '.join(IMPLS)}"
            impl = "fast"
        if kernels not in SWITCH_VALUES:
            self.env_error = f"TINYSEG_CUDA_KERNELS={kernels!r}: use 1 or 0"
            kernels = "0"
        if self.env_error:
            warnings.warn(f"tinyseg: {self.env_error}; using the default", stacklevel=2)
        self.impl, self.cuda_kernels = impl, SWITCH_VALUES[kernels]

    def __setattr__(self, name, value):
        if name == "impl" and value not in IMPLS:
            raise ValueError(f"tinyseg config: impl must be one of {IMPLS}, got {value!r}")
        if name == "cuda_kernels" and not isinstance(value, bool):
            raise ValueError(f"tinyseg config: cuda_kernels must be True or False, got {value!r}")
        if name not in ("impl", "cuda_kernels", "env_error"):
            raise AttributeError(f"tinyseg config has no setting {name!r}: it has impl and cuda_kernels")
        object.__setattr__(self, name, value)

    def __repr__(self):
        return f"Config(impl={self.impl!r}, cuda_kernels={self.cuda_kernels})"


config = Config()


@contextlib.contextmanager
def using_config(**settings):
    """Set some of config's switches inside a `with` block; the old values come back after it,
    also when the block raises."""
    old = {name: getattr(config, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(config, name, value)
        yield config
    finally:
        for name, value in old.items():
            object.__setattr__(config, name, value)


def add_arguments(parser):
    """--impl and --cuda-kernels on a command line (train.py, evaluate.py, predict.py, bench/).
    A bad TINYSEG_IMPL / TINYSEG_CUDA_KERNELS stops the command in one line."""
    if config.env_error:
        sys.exit(f"error: {config.env_error} (or unset it)")
    parser.add_argument("--impl", choices=IMPLS, default=config.impl,
                        help="which version of the ops runs: the fast twins of tinyseg/fast/ or "
                             "the plain reference ops of tinyseg/functional/ (default: %(default)s)")
    parser.add_argument("--cuda-kernels", action="store_true", default=config.cuda_kernels,
                        help="on the GPU, use the hand-written CUDA kernels of "
                             "tinyseg/fast/cuda_kernels.py (default: %(default)s)")


def apply_arguments(args):
    """Set config from the options of add_arguments."""
    config.impl, config.cuda_kernels = args.impl, bool(args.cuda_kernels)
