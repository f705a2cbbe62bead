"""Which version of an op runs: the reference of tinyseg/functional/ or its fast twin.

Every op wrapper of tinyseg/functional/ asks here for the class to run,

    function = choose(Conv2d, x)(stride, padding, dilation, groups)

and this is the one place that decides, from tinyseg.config and the device of x: with
config.impl == "reference" always the reference; else the twin that tinyseg/fast/ lists for
the device (tinyseg/fast/__init__.py holds the table), or the reference where there is none.
A twin has the reference's constructor and gives its results, so the choice changes speed
only.
"""
import numpy as np

from .autograd import Tensor
from .backend import get_array_module
from .config import config


def choose(reference, like):
    """The op to run in place of `reference` (a Function class or a function of
    tinyseg/functional/) for arrays like `like` (an array or a Tensor)."""
    if config.impl == "reference":
        return reference
    from . import fast  # imported on first use: fast/ builds on functional/
    on_cpu = get_array_module(like.data if isinstance(like, Tensor) else like) is np
    if on_cpu:
        twins = fast.CPU_TWINS
    else:
        twins = fast.CUDA_TWINS if config.cuda_kernels else {}
    return twins.get(reference, reference)
