"""NumPy or CuPy: the one place in tinyseg that knows about both.

Every op asks its inputs which array module they live in (`get_array_module`) and then
writes its math once with that module, called `xp` by convention:

    xp = get_array_module(x)
    y = xp.maximum(x, 0)

so the same line runs on the CPU (NumPy) and on an NVIDIA GPU (CuPy). Only this file imports
cupy; everything else goes through the helpers below.
"""
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


def device_of(array):
    """"cuda" for a CuPy array, "cpu" otherwise."""
    return "cuda" if get_array_module(array) is not np else "cpu"


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
