"""Write cupy14_names.json: the public names of CuPy 14 that the strict stand-in may expose.

The real CuPy imports without a GPU (only calls into CUDA fail), so its names can be read on
any machine. The list was made with cupy-cuda12x 14.2.0 and NumPy 2.4.1 on Python 3.11:

    python -m venv /tmp/cupyvenv
    /tmp/cupyvenv/bin/pip install "cupy-cuda12x==14.2.0" "numpy==2.4.1"
    /tmp/cupyvenv/bin/python tests/strict_cupy/make_names.py

For each module tinyseg touches (the top level, cupy.cuda, cupy.cuda.runtime, cupy.lib,
cupy.lib.stride_tricks, and cupyx, which shows that CuPy 14 has no cupyx.cudnn) it records every
public name and its kind:

    ufunc       a cupy.ufunc (elementwise, with .at/.reduce/...)
    numpy       the very object NumPy exports under that name (cupy.float32 is numpy.float32,
                cupy.newaxis is numpy.newaxis), or a NumPy scalar type under an old name
                (cupy.float_ is numpy.float64: written under "numpy_aliases")
    exception   an exception class of CuPy's own (cupy.cuda.runtime.CUDARuntimeError)
    class       another class (cupy.ndarray, cupy.RawKernel, ...)
    function    anything else callable
    module      a submodule
    value       a constant; floats, ints and bools are written under "values"

and, for the classes the stand-in emulates, every attribute (dunders included), so that a test
can check that the stand-in's ndarray offers nothing CuPy's lacks (no __index__, for one).
"""
import json
import os
import platform
import sys
import types

import cupy
import cupy.cuda.runtime
import cupy._core.flags  # the type of an array's .flags (making an array needs a GPU)
import cupy.lib.stride_tricks
import cupyx
import numpy

MODULES = {"cupy": cupy, "cupy.cuda": cupy.cuda, "cupy.cuda.runtime": cupy.cuda.runtime,
           "cupy.lib": cupy.lib, "cupy.lib.stride_tricks": cupy.lib.stride_tricks,
           "cupyx": cupyx}
CLASSES = {"cupy.ndarray": cupy.ndarray, "cupy.ufunc": cupy.ufunc,
           "cupy.RawKernel": cupy.RawKernel, "cupy.cuda.Device": cupy.cuda.Device,
           "cupy.cuda.MemoryPool": cupy.cuda.MemoryPool,
           "cupy.ndarray.flags": cupy._core.flags.Flags}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy14_names.json")


def numpy_object(name):
    """What NumPy exports under this name (top level or numpy.exceptions), or None."""
    for module in (numpy, numpy.exceptions):
        if name in dir(module):
            return getattr(module, name)
    return None


def kind_of(name, value):
    if isinstance(value, types.ModuleType):
        return "module"
    if isinstance(value, cupy.ufunc):
        return "ufunc"
    if numpy_object(name) is value or isinstance(value, type) and issubclass(value, numpy.generic):
        return "numpy"
    if isinstance(value, type):
        return "exception" if issubclass(value, BaseException) else "class"
    if callable(value):
        return "function"
    return "value"


def main():
    modules, values, aliases = {}, {}, {}
    for module_name, module in MODULES.items():
        names = {}
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            value = getattr(module, name)
            names[name] = kind_of(name, value)
            if names[name] == "value" and type(value) in (float, int, bool):
                values[f"{module_name}.{name}"] = repr(value)
            if names[name] == "numpy" and numpy_object(name) is not value:
                aliases[f"{module_name}.{name}"] = value.__name__
        modules[module_name] = names
    classes = {name: sorted(dir(cls)) for name, cls in CLASSES.items()}
    listing = {"cupy_version": cupy.__version__, "numpy_version": numpy.__version__,
               "python_version": platform.python_version(),
               "command": "/tmp/cupyvenv/bin/python tests/strict_cupy/make_names.py (in a venv "
                          "with cupy-cuda12x==14.2.0 and numpy==2.4.1)",
               "modules": modules, "classes": classes, "values": values,
               "numpy_aliases": aliases}
    with open(OUT, "w") as f:
        json.dump(listing, f, indent=1, sort_keys=True)
        f.write("\n")
    counts = ", ".join(f"{name} {len(names)}" for name, names in modules.items())
    print(f"wrote {OUT}: CuPy {cupy.__version__}: {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
