"""A strict NumPy-backed stand-in for CuPy 14, to run tinyseg's CuPy path without a GPU.

tinyseg's GPU code is the same xp code as its CPU code, run with xp = cupy, plus what only CuPy
has (RawKernel, cupy.cuda, the memory pool). Without a GPU that path never runs, and its
typical bugs (a device array handed to NumPy, a NumPy array mixed into device math, a NumPy
function CuPy lacks) stay hidden. This package is a `cupy` module that fails where CuPy fails:

- its arrays (array.py) are not NumPy arrays: implicit conversion to NumPy raises CuPy's
  TypeError, NumPy operands in their math raise, `.get()`, `cupy.asnumpy` and `cupy.asarray`
  are the explicit transfers; views write through to their base as device views do;
- the modules expose exactly the public names of the real CuPy 14 (cupy14_names.json, made by
  make_names.py from the cupy-cuda12x wheel). A name CuPy lacks raises AttributeError (so
  `cupyx.cudnn`, gone in CuPy 14, is absent); a CuPy name the stand-in does not emulate raises
  NotImplementedError("strict_cupy: cupy.X is not emulated") when used. The rest are NumPy's
  functions of the same name on the stand-in's arrays (routines.py, ufunc.py);
- RawKernel compiles the CUDA source as C++ and runs every thread of the launch (kernels.py);
  cupy.cuda has one device and cupy.cuda.runtime.getDeviceCount() is 1 (cuda.py).

What it cannot check: speed, memory use (the arrays are host memory), asynchrony and streams
(everything has finished when it returns), atomics and the order of threads in kernels, real
NVRTC compilation, and the float differences of GPU reductions (it sums as NumPy does).

    modules = strict_cupy.modules()   # {"cupy": ..., "cupy.cuda": ..., ..., "cupyx": ...}
    cupy = strict_cupy.install()      # into sys.modules, and tinyseg.backend._cupy if loaded

tests/conftest.py installs it for the test session where no GPU is present; run.py runs a
script (train.py, evaluate.py) with it.
"""
import ast
import json
import os
import sys
import types

import numpy

from . import cuda, kernels, routines, ufunc
from .array import ndarray

NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy14_names.json")
with open(NAMES_FILE) as _f:
    NAMES = json.load(_f)
CUPY_VERSION = NAMES["cupy_version"]
ARRAY_PROPERTIES = ("cstruct", "flat")  # CuPy's ndarray attributes that are no methods

# What the stand-in implements itself, module by module; the rest of CuPy's names are NumPy's
# functions of the same name (cupy only), NumPy's objects, or stubs.
IMPLEMENTED = {
    "cupy": {**routines.TOP, "ndarray": ndarray, "ufunc": ufunc.ufunc,
             "RawKernel": kernels.RawKernel,
             "get_default_memory_pool": cuda.get_default_memory_pool},
    "cupy.cuda": cuda.CUDA,
    "cupy.cuda.runtime": cuda.RUNTIME,
    "cupy.lib": {},
    "cupy.lib.stride_tricks": routines.STRIDE_TRICKS,
    "cupyx": {},
}


class StrictModule(types.ModuleType):
    """A module that names only CuPy 14's attributes: any other raises AttributeError."""

    def __getattr__(self, name):
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (strict_cupy: "
                             f"CuPy {CUPY_VERSION} has no {self.__name__}.{name})")


class NotEmulatedModule(types.ModuleType):
    """A submodule CuPy has and the stand-in does not emulate: using it raises."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotImplementedError(f"strict_cupy: {self.__name__}.{name} is not emulated")


class NotEmulated:
    """A CuPy constant (cupy.r_, cupy.mgrid, ...) the stand-in does not emulate."""

    def __init__(self, qualified):
        self._qualified = qualified

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotImplementedError(f"strict_cupy: {self._qualified} is not emulated")

    def __getitem__(self, key):
        raise NotImplementedError(f"strict_cupy: {self._qualified} is not emulated")

    __call__ = __getitem__


def not_emulated(qualified, kind):
    """A stand-in for CuPy's `qualified` that raises NotImplementedError when used."""
    message = f"strict_cupy: {qualified} is not emulated"

    def refuse(*args, **kwargs):
        raise NotImplementedError(message)
    name = qualified.rsplit(".", 1)[1]
    if kind == "class":
        return type(name, (), {"__new__": refuse, "__doc__": message})
    if kind == "exception":
        return type(name, (RuntimeError,), {"__doc__": message})
    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = message
    return refuse


def _numpy_module(qualified, name):
    """(the NumPy module that has CuPy's `qualified`, its name there), or (None, name)."""
    alias = NAMES["numpy_aliases"].get(qualified, name)
    for module in (numpy, numpy.exceptions):
        if hasattr(module, alias):
            return module, alias
    return None, alias


def _attribute(module_name, name, kind, built):
    """The stand-in's object for CuPy's module_name.name (of the given kind)."""
    qualified = f"{module_name}.{name}"
    if name in IMPLEMENTED[module_name]:
        return IMPLEMENTED[module_name][name]
    if kind == "module":
        return built.get(qualified) or NotEmulatedModule(qualified)
    numpy_module, numpy_name = _numpy_module(qualified, name)
    if kind == "numpy" and numpy_module is not None:
        return getattr(numpy_module, numpy_name)  # the very object (cupy.newaxis is None)
    if kind == "value":
        text = NAMES["values"].get(qualified)
        if text is None:
            return NotEmulated(qualified)
        try:
            return ast.literal_eval(text)
        except ValueError:  # inf, -inf, nan
            return float(text)
    numpy_has = module_name == "cupy" and callable(getattr(numpy, name, None))
    if kind == "ufunc" and numpy_has:
        return ufunc.get(name)
    if kind == "function" and numpy_has:
        return routines.numpy_function(name)
    return not_emulated(qualified, kind)


_MODULES = {}


def modules():
    """{name: module} for cupy, cupy.cuda, cupy.cuda.runtime, cupy.lib, cupy.lib.stride_tricks
    and cupyx: built once, each holding CuPy 14's public names and nothing else."""
    if not _MODULES:
        built = {name: StrictModule(name, f"strict_cupy's stand-in for {name} (CuPy "
                                          f"{CUPY_VERSION}'s names)")
                 for name in NAMES["modules"]}
        for module_name, names in NAMES["modules"].items():
            for name, kind in names.items():
                setattr(built[module_name], name, _attribute(module_name, name, kind, built))
        built["cupy"].__version__ = CUPY_VERSION
        _attach_array_stubs()
        _MODULES.update(built)
    return _MODULES


def _attach_array_stubs():
    """cupy.ndarray's public attributes that the stand-in lacks raise NotImplementedError."""
    for name in NAMES["classes"]["cupy.ndarray"]:
        if name.startswith("_") or hasattr(ndarray, name):
            continue
        stub = not_emulated(f"cupy.ndarray.{name}", "function")
        setattr(ndarray, name, property(stub) if name in ARRAY_PROPERTIES else stub)


def install(monkeypatch=None):
    """Make the stand-in `cupy` (and its submodules, and `cupyx`) what `import cupy` gives, and
    tinyseg.backend's CuPy when tinyseg is loaded; returns the cupy module. With a pytest
    monkeypatch, everything is undone at its end."""
    def put(target, key, value):
        if monkeypatch is not None:
            monkeypatch.setitem(target, key, value)
        else:
            target[key] = value
    for name, module in modules().items():
        put(sys.modules, name, module)
    backend = sys.modules.get("tinyseg.backend")
    if backend is not None:
        put(backend.__dict__, "_cupy", modules()["cupy"])
    return modules()["cupy"]
