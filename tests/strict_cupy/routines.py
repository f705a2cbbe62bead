"""The stand-in's functions: NumPy's of the same name, on the stand-in's arrays.

CuPy implements NumPy's functions for its own arrays, so the stand-in implements each of the
names CuPy 14 exports generically: unwrap the stand-in arrays, call NumPy's function, wrap the
result (NumPy scalars become 0-d arrays, as CuPy's reductions return). A NumPy array among the
arguments raises CuPy's TypeError, except in the functions that copy host data over:
cupy.array/asarray/asanyarray (and the *_like functions, which read only a shape and dtype).
The functions here are the ones that differ from that rule.
"""
import numpy

from .array import check_dtype, ndarray, unwrap, unwrap_all, wrap

HOST_DATA = ("empty_like", "zeros_like", "ones_like", "full_like")  # CuPy reads shape, dtype


def numpy_function(name, module=numpy, qualified=None, host_arrays=False):
    """cupy.<name> as NumPy's module.<name>; `out=` returns the stand-in array it was given."""
    function = getattr(module, name)

    def cupy_function(*args, **kwargs):
        out = kwargs.get("out")
        args, kwargs = unwrap_all(args, kwargs, host_arrays)
        result = function(*args, **kwargs)
        if isinstance(out, ndarray) and result is out._array:
            return out
        return wrap(result)
    cupy_function.__name__ = cupy_function.__qualname__ = name
    cupy_function.__module__ = "cupy"
    cupy_function.__doc__ = f"{qualified or 'numpy.' + name} on the stand-in's arrays."
    return cupy_function


def _host_copy(a, dtype=None, order="K", ndmin=0):
    """A new stand-in array holding a copy of host data (CuPy copies it to the device)."""
    result = numpy.array(unwrap(a, host_arrays=True), dtype=dtype, order=order or "K",
                         ndmin=ndmin)
    check_dtype(result.dtype)
    return wrap(result)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if not isinstance(obj, ndarray):
        return _host_copy(obj, dtype, order, ndmin)
    result = numpy.array(obj._array, dtype=dtype, copy=copy, order=order, ndmin=ndmin)
    return obj if result is obj._array else wrap(result)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    if not isinstance(a, ndarray):
        return _host_copy(a, dtype, order)
    result = numpy.asarray(a._array, dtype=dtype, order=order, copy=copy)
    return a if result is a._array else wrap(result)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError("Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base,"
                        f" got {type(a).__name__})")
    result = numpy.ascontiguousarray(a._array, dtype)
    return a if result is a._array else wrap(result)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A NumPy array: a copy of a stand-in array, anything else through numpy.asarray."""
    if isinstance(a, ndarray):
        return a.get(stream, order, out, blocking)
    result = numpy.asarray(a, order=order)
    if out is not None:
        out[...] = result
        return out
    return result


def get_array_module(*args):
    from . import modules
    if any(isinstance(a, ndarray) for a in args):
        return modules()["cupy"]
    return numpy


def is_available():
    return True


def as_strided(x, shape=None, strides=None):
    """cupy.lib.stride_tricks.as_strided: a view of x's memory; read it, never write it."""
    if not isinstance(x, ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    return wrap(numpy.lib.stride_tricks.as_strided(x._array, shape, strides))


TOP = {"array": array, "asarray": asarray, "asanyarray": asarray,
       "ascontiguousarray": ascontiguousarray, "asnumpy": asnumpy,
       "get_array_module": get_array_module, "is_available": is_available}
TOP.update({name: numpy_function(name, host_arrays=True) for name in HOST_DATA})
STRIDE_TRICKS = {"as_strided": as_strided,
                 "sliding_window_view": numpy_function(
                     "sliding_window_view", numpy.lib.stride_tricks,
                     "numpy.lib.stride_tricks.sliding_window_view")}
