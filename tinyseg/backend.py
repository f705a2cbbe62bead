"""NumPy or CuPy: the one place in tinyseg that knows about both.

Every op asks its inputs which array module they live in (`get_array_module`) and then
writes its math once with that module, called `xp` by convention:

    xp = get_array_module(x)
    y = xp.maximum(x, 0)

so the same line runs on the CPU (NumPy) and on an NVIDIA GPU (CuPy). Only this file imports
cupy; everything else goes through the helpers below.
"""
import ctypes
import sys

import numpy as np

try:  # CuPy is an optional extra: `pip install tinyseg[cuda]`.
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy whose CUDA libraries fail to load
    _cupy = None


class BackendError(RuntimeError):
    """Raised when the requested backend cannot run here; the message says what to install."""


def cupy_available():
    """True when CuPy imports and sees at least one GPU."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def require_cupy():
    """Return the cupy module, or raise a one-line BackendError saying what is missing."""
    if _cupy is None:
        raise BackendError(
            "--backend cupy needs CuPy: install it with `pip install tinyseg[cuda]` "
            "(or the cupy-cudaXXx wheel matching your CUDA), or use --backend numpy")
    if not cupy_available():
        raise BackendError(
            "--backend cupy needs an NVIDIA GPU, but CuPy found none (check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES), or use --backend numpy")
    return _cupy


def get_backend(name):
    """The array module for a backend name: "numpy" (or "cpu") or "cupy" (or "cuda")."""
    if name in ("numpy", "cpu"):
        return np
    if name in ("cupy", "cuda"):
        return require_cupy()
    raise BackendError(f"unknown backend {name!r}: choose 'numpy' or 'cupy'")


def get_array_module(*arrays):
    """numpy or cupy, whichever holds the given arrays (numpy for Python scalars)."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def as_strided(array, shape, strides):
    """A view of array's memory with the given shape and strides (in bytes), by NumPy's or
    CuPy's lib.stride_tricks.as_strided. Its elements may overlap: read it, never write it."""
    if get_array_module(array) is np:
        return np.lib.stride_tricks.as_strided(array, shape, strides)
    import cupy.lib.stride_tricks
    return cupy.lib.stride_tricks.as_strided(array, shape, strides)


def device_name(xp):
    """The device an array module computes on: "cpu" for numpy, "cuda" for cupy (for to_device
    and Module.to)."""
    return "cpu" if xp is np else "cuda"


def device_of(array):
    """"cuda" for a CuPy array, "cpu" otherwise."""
    return device_name(get_array_module(array))


def to_device(array, device):
    """Copy an array to "cpu" (NumPy) or "cuda" (CuPy); no copy when it is already there."""
    if device in ("cpu", "numpy"):
        if _cupy is not None and isinstance(array, _cupy.ndarray):
            return _cupy.asnumpy(array)
        return np.asarray(array)
    if device in ("cuda", "cupy", "gpu"):
        return require_cupy().asarray(array)
    raise BackendError(f"unknown device {device!r}: choose 'cpu' or 'cuda'")


def to_numpy(array):
    """A NumPy copy of any array (for printing, saving and metrics)."""
    return to_device(array, "cpu")


def keep_freed_memory():
    """Let this process reuse the memory it frees instead of handing it back to the OS.

    A training step allocates and frees hundreds of MB of activations and gradients. glibc's
    malloc serves large blocks (over 32 MB, or once freed blocks were handed back) straight from
    the OS, which hands out fresh pages that fault in one by one (about 60,000 faults and
    ~10% of a ResNet-50 step on the CPU). With these settings freed blocks stay in the heap
    and the next step reuses them, as GPU frameworks' caching allocators (CuPy's memory pool)
    do. The process then keeps its peak memory. Linux with glibc only; returns whether it
    applied (elsewhere it does nothing).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    settings = ((M_MMAP_THRESHOLD, 1 << 30),   # blocks up to 1 GB come from the heap
                (M_TRIM_THRESHOLD, 2**31 - 1),  # never shrink the heap
                (M_TOP_PAD, 1 << 28))           # grow it 256 MB at a time
    return all(mallopt(option, value) == 1 for option, value in settings)
