"""The stand-in's cupy.ndarray: a NumPy array in a wrapper that behaves like device memory.

It is not a NumPy subclass, and it refuses what CuPy refuses (cupy/_core/core.pyx, v14.2.0):

    np.asarray(a), np.array(a)      TypeError: Implicit conversion to a NumPy array is not allowed
    a + numpy_array, numpy_array * a, a[...] += numpy_array
                                    TypeError: Unsupported type <class 'numpy.ndarray'>
    a[:] = numpy_array (non-scalar) ValueError: non-scalar numpy.ndarray cannot be used for fill
    range(a), [0, 1][a]             TypeError (CuPy's ndarray has no __index__)

Python and NumPy scalars mix freely, NumPy index arrays may index it, `a[idx] = numpy_array`
with an advanced index transfers the values (as CuPy does). `a.get()` and `cupy.asnumpy(a)`
copy to the host, `cupy.asarray(numpy_array)` copies to the "device". Every view (a slice, a
transpose, a reshape) wraps a NumPy view, so writes go through to its base as on the GPU.
Reductions and scalar indexing return 0-d arrays, not NumPy scalars. The arithmetic operators
are attached in ufunc.py, where the ufuncs they call live.
"""
import warnings

import numpy

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")
PYTHON_SCALARS = (bool, int, float, complex)
SUPPORTED_KINDS = "biufc"  # CuPy has no object, string, datetime or void arrays


def is_scalar(value):
    """A Python or NumPy scalar: what CuPy's kernels accept besides its own arrays."""
    return type(value) in PYTHON_SCALARS or (isinstance(value, numpy.generic)
                                              and value.dtype.kind in SUPPORTED_KINDS)


def check_dtype(dtype):
    if numpy.dtype(dtype).kind not in SUPPORTED_KINDS:
        raise ValueError(f"Unsupported dtype {numpy.dtype(dtype)}")


def wrap(result):
    """NumPy results as the stand-in's: arrays wrapped, NumPy scalars as 0-d arrays (CuPy's
    reductions return those), tuples and lists element by element; anything else as it is."""
    if isinstance(result, numpy.ndarray):
        check_dtype(result.dtype)
        array = ndarray.__new__(ndarray)
        array._array = result
        return array
    if isinstance(result, numpy.generic) and result.dtype.kind in SUPPORTED_KINDS:
        return wrap(numpy.array(result))
    if type(result) in (tuple, list):
        return type(result)(wrap(r) for r in result)
    if isinstance(result, tuple):  # a named tuple (numpy.unique_all, ...)
        return type(result)(*(wrap(r) for r in result))
    return result


def unwrap(value, host_arrays=False):
    """The NumPy arrays inside stand-in arrays, through tuples and lists; a NumPy array among
    them raises CuPy's TypeError unless host_arrays (the few functions that copy host data)."""
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, numpy.ndarray) and not host_arrays:
        raise TypeError(f"Unsupported type {type(value)} (strict_cupy: a NumPy array where "
                        "CuPy takes its own arrays; copy it over with cupy.asarray)")
    if type(value) in (tuple, list):
        return type(value)(unwrap(v, host_arrays) for v in value)
    return value


def unwrap_all(args, kwargs, host_arrays=False):
    return (unwrap(args, host_arrays),
            {key: unwrap(value, host_arrays) for key, value in kwargs.items()})


def _index(key):
    """An index for the wrapped array: CuPy accepts its own and NumPy's index arrays."""
    return unwrap(key, host_arrays=True)


def _is_advanced(key):
    """Whether an index holds an index array (CuPy then copies NumPy values over)."""
    parts = key if type(key) is tuple else (key,)
    return any(isinstance(p, (list, numpy.ndarray, ndarray, bool, numpy.bool_)) for p in parts)


class Flags:
    """a.flags: CuPy's three flags (c_contiguous, f_contiguous, owndata)."""

    def __init__(self, array):
        self.c_contiguous = bool(array.flags.c_contiguous)
        self.f_contiguous = bool(array.flags.f_contiguous)
        self.owndata = bool(array.flags.owndata)

    @property
    def fnc(self):
        return self.f_contiguous and not self.c_contiguous

    @property
    def forc(self):
        return self.f_contiguous or self.c_contiguous

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self):
        return "\n".join(f"  {name} : {self[name]}"
                         for name in ("C_CONTIGUOUS", "F_CONTIGUOUS", "OWNDATA"))


class ndarray:
    """cupy.ndarray(shape, dtype=float, order='C'): an uninitialised array, as in CuPy."""

    __slots__ = ("_array",)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("strict_cupy: cupy.ndarray(memptr=, strides=) is not "
                                      "emulated")
        check_dtype(dtype)
        self._array = numpy.empty(shape, dtype, order)

    # Conversions: explicit ones only.

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A NumPy copy (or a copy into `out`, a NumPy array of the same shape)."""
        if out is None:
            return numpy.array(self._array, order=order, copy=True)
        if not isinstance(out, numpy.ndarray):
            raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
        if out.shape != self.shape or out.dtype != self.dtype:
            raise ValueError("Shape or dtype mismatch between out and the array")
        out[...] = self._array
        return out

    def set(self, arr, stream=None):
        """Copy a NumPy array of the same shape and dtype into this array."""
        if not isinstance(arr, numpy.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if arr.shape != self.shape:
            raise ValueError("Shape mismatch. Old shape: {}, new shape: {}".format(
                self.shape, arr.shape))
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        self._array[...] = arr

    def item(self, *args):
        return self._array.item(*args)

    def tolist(self):
        return self._array.tolist()

    def __bool__(self):
        if self.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous. Returning False, "
                          "but in future this will result in an error. Use `array.size > 0` "
                          "to check that an array is not empty.", DeprecationWarning)
            return False
        if self.size == 1:
            return bool(self.get())
        raise ValueError("The truth value of an array with more than one element is "
                         "ambiguous. Use a.any() or a.all()")

    def __int__(self):
        return int(self.get())

    def __float__(self):
        return float(self.get())

    def __complex__(self):
        return complex(self.get())

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __reduce__(self):
        from .routines import array
        return array, (self.get(),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # NumPy's protocols: NumPy functions on these arrays call the stand-in's (or fail).

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import modules
        cupy = modules()["cupy"]
        if "out" in kwargs:
            if len(kwargs["out"]) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = kwargs["out"][0]
        ours = getattr(cupy, ufunc.__name__, None)
        if ours is None or method not in ("__call__", "outer", "at", "reduce", "accumulate",
                                          "reduceat"):
            return NotImplemented
        if any(not (is_scalar(x) or isinstance(x, (ndarray, numpy.ndarray)))
               for x in inputs + (kwargs.get("out"),) if x is not None):
            return NotImplemented
        if ufunc.__name__ in ("greater", "greater_equal", "less", "less_equal", "equal",
                              "not_equal"):  # CuPy's workaround for numpy/numpy#12142
            inputs = tuple(x.item() if isinstance(x, numpy.ndarray) and x.ndim == 0 else x
                           for x in inputs)
        function = ours if method == "__call__" else getattr(ours, method, None)
        if function is None:
            return NotImplemented
        return function(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import modules
        cupy = modules()["cupy"]
        try:
            module = cupy
            for part in func.__module__.split(".")[1:]:
                module = getattr(module, part)
            ours = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if not all(issubclass(t, (ndarray, numpy.ndarray)) for t in types):
            return NotImplemented
        return ours(*args, **kwargs)

    # Containers: iteration yields 0-d arrays, indexing returns views where NumPy does.

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, key):
        key = _index(key)
        result = self._array[key]
        if isinstance(result, numpy.generic):  # a 0-d view, as CuPy returns
            parts = key if type(key) is tuple else (key,)
            has_ellipsis = any(p is Ellipsis for p in parts)
            result = numpy.array(result) if has_ellipsis else self._array[parts + (Ellipsis,)]
        return wrap(result)

    def __setitem__(self, key, value):
        if isinstance(value, ndarray):
            value = value._array
        elif not is_scalar(value) and not _is_advanced(key):
            value = numpy.asarray(value, dtype=self.dtype)  # CuPy: ndarray.fill(value)
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._array[_index(key)] = value

    # Attributes.

    @property
    def shape(self):
        return self._array.shape

    @shape.setter
    def shape(self, shape):
        self._array.shape = shape

    dtype = property(lambda self: self._array.dtype)
    size = property(lambda self: self._array.size)
    ndim = property(lambda self: self._array.ndim)
    nbytes = property(lambda self: self._array.nbytes)
    itemsize = property(lambda self: self._array.itemsize)
    strides = property(lambda self: self._array.strides)
    T = property(lambda self: wrap(self._array.T))
    mT = property(lambda self: wrap(self._array.mT))
    flags = property(lambda self: Flags(self._array))

    @property
    def real(self):
        return wrap(self._array.real)

    @real.setter
    def real(self, value):
        self._array.real = unwrap(value)

    @property
    def imag(self):
        return wrap(self._array.imag)

    @imag.setter
    def imag(self, value):
        self._array.imag = unwrap(value)

    @property
    def base(self):
        base = self._array.base
        return wrap(base) if isinstance(base, numpy.ndarray) else None

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    @property
    def data(self):
        """The device memory's address (a cupy.cuda.MemoryPointer), as in CuPy."""
        from .cuda import MemoryPointer
        return MemoryPointer(self._array.ctypes.data)

    # Methods that take more than NumPy's arguments, or refuse more.

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        check_dtype(dtype)
        return wrap(self._array.astype(dtype, order, casting or "unsafe", copy=copy))

    def copy(self, order="C"):
        return wrap(self._array.copy(order))

    def fill(self, value):
        if isinstance(value, ndarray):
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._array
        elif numpy.asarray(value).shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._array.fill(value)

    def ptp(self, axis=None, out=None, keepdims=False):
        return wrap(numpy.ptp(self._array, axis, unwrap(out), keepdims))


def _numpy_method(name):
    """ndarray.name: NumPy's method on the wrapped array, arguments unwrapped, result wrapped;
    `out=` returns the stand-in array it was given."""
    def method(self, *args, **kwargs):
        out = kwargs.get("out")
        args, kwargs = unwrap_all(args, kwargs)
        result = getattr(self._array, name)(*args, **kwargs)
        return out if out is not None else wrap(result)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"numpy.ndarray.{name}, on the stand-in's arrays."
    return method


NUMPY_METHODS = ("all", "any", "argmax", "argmin", "argpartition", "argsort", "choose", "clip",
                 "compress", "conj", "conjugate", "cumprod", "cumsum", "diagonal", "dot",
                 "flatten", "max", "mean", "min", "nonzero", "partition", "prod", "put",
                 "ravel", "repeat", "reshape", "round", "searchsorted", "sort", "squeeze", "std",
                 "sum", "swapaxes", "take", "tobytes", "trace", "transpose", "var", "view",
                 "byteswap")
for _name in NUMPY_METHODS:
    setattr(ndarray, _name, _numpy_method(_name))
