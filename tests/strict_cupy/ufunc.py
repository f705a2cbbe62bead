"""The stand-in's cupy.ufunc, and cupy.ndarray's operators, which call it.

A ufunc takes stand-in arrays and Python or NumPy scalars, nothing else: a NumPy array (0-d
ones too) or a list raises TypeError("Unsupported type ..."), as CuPy's kernels do
(cupy/_core/_kernel.pyx, _preprocess_args, v14.2.0). Its keywords are CuPy's: out=, dtype=,
casting= (no where=). As in CuPy 14, ufunc.at exists for add, subtract and the bitwise
and/or/xor only, reduce and accumulate for add and multiply, reduceat for add.

The operators follow core.pyx: `a + b` is cupy.add(a, b) (so a NumPy operand raises there),
`a += b` is cupy.add(a, b, out=a), an operand whose __array_ufunc__ is None gets its reflected
operator, and `a == None` is an all-False array.
"""
import numpy

from .array import is_scalar, ndarray, unwrap, wrap

SCATTER = ("add", "subtract", "bitwise_and", "bitwise_or", "bitwise_xor")
REDUCE = {"add": "sum", "multiply": "prod"}
ACCUMULATE = {"add": "cumsum", "multiply": "cumprod"}
UFUNCS = {}  # name -> ufunc, filled by ufunc.get


def _device_argument(value):
    """A kernel argument: a stand-in array's NumPy array, or a scalar; TypeError otherwise."""
    if isinstance(value, ndarray):
        return value._array
    if is_scalar(value):
        return value
    if isinstance(value, numpy.ndarray):
        unwrap(value)  # raises CuPy's TypeError, with the stand-in's hint
    raise TypeError(f"Unsupported type {type(value)}")


class ufunc:
    """cupy.<name>: NumPy's ufunc of the same name on the stand-in's arrays."""

    def __init__(self, name):
        self._numpy = getattr(numpy, name)  # a ufunc, or a function (fix, i0, sinc)
        self._short = name
        self.name = self.__name__ = "cupy_" + name
        is_ufunc = isinstance(self._numpy, numpy.ufunc)
        self.nin = self._numpy.nin if is_ufunc else 1
        self.nout = self._numpy.nout if is_ufunc else 1
        self.nargs = self.nin + self.nout
        self.types = list(self._numpy.types) if is_ufunc else []

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, **kwargs):
        out = kwargs.pop("out", None)
        dtype = kwargs.pop("dtype", None)
        casting = kwargs.pop("casting", "same_kind")
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if not self.nin <= len(args) <= self.nargs:
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nargs} (with outputs), but given {len(args)}.")
        inputs, outs = args[:self.nin], args[self.nin:]
        if out is not None:
            if outs:
                raise ValueError("Cannot specify 'out' as both a positional and keyword argument")
            outs = out if isinstance(out, tuple) else (out,)
        inputs = [_device_argument(x) for x in inputs]
        for o in outs:
            if o is not None and not isinstance(o, ndarray):
                raise TypeError(f"Unsupported type {type(o)}")
        given = [o for o in outs if o is not None]
        if not isinstance(self._numpy, numpy.ufunc):
            result = self._numpy(*inputs)
            result = result if dtype is None else result.astype(dtype)
            if given:
                given[0]._array[...] = result
                return given[0]
            return wrap(result)
        options = {"casting": casting}
        if dtype is not None:
            options["dtype"] = dtype
        if given:
            options["out"] = tuple(o._array if o is not None else None
                                   for o in (tuple(outs) + (None,) * self.nout)[:self.nout])
        result = self._numpy(*inputs, **options)
        if not given:
            return wrap(result)
        if self.nout == 1:
            return outs[0]
        return tuple(o if o is not None else wrap(r) for o, r in zip(outs, result))

    def at(self, a, indices, b=None):
        """a[indices] op= b, unbuffered (repeated indices all count), for add, subtract and the
        bitwise ops; NumPy index arrays are copied over, a NumPy `b` only with index arrays."""
        if self._short not in SCATTER:
            raise NotImplementedError(f"`{self.name}.at` is not supported yet")
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        index = unwrap(indices, host_arrays=True)
        parts = index if type(index) is tuple else (index,)
        advanced = any(isinstance(p, (list, numpy.ndarray)) for p in parts)
        value = unwrap(b, host_arrays=advanced)
        if not advanced and not is_scalar(value) and not isinstance(b, ndarray):
            raise TypeError(f"Unsupported type {type(b)}")
        self._numpy.at(a._array, index, value)

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        if self._short not in REDUCE:
            raise NotImplementedError(f"`{self.name}.reduce` is not supported yet")
        return getattr(_array_argument(array), REDUCE[self._short])(axis, dtype, out, keepdims)

    def accumulate(self, array, axis=0, dtype=None, out=None):
        if self._short not in ACCUMULATE:
            raise NotImplementedError(f"`{self.name}.accumulate` is not supported yet")
        return getattr(_array_argument(array), ACCUMULATE[self._short])(axis, dtype, out)

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        if self._short != "add":
            raise NotImplementedError(f"`{self.name}.reduceat` is not supported yet")
        result = numpy.add.reduceat(_array_argument(array)._array,
                                    unwrap(indices, host_arrays=True), axis, dtype, unwrap(out))
        return out if out is not None else wrap(result)

    def outer(self, A, B, **kwargs):
        A = wrap(numpy.array(unwrap(A, host_arrays=True)))  # CuPy: core.array(A)
        B = wrap(numpy.array(unwrap(B, host_arrays=True)))
        return self(A.reshape(A.shape + (1,) * B.ndim), B.reshape((1,) * A.ndim + B.shape),
                    **kwargs)


def _array_argument(value):
    if not isinstance(value, ndarray):
        raise TypeError(f"Unsupported type {type(value)}")
    return value


def get(name):
    """The stand-in's ufunc `name` (made once)."""
    if name not in UFUNCS:
        UFUNCS[name] = ufunc(name)
    return UFUNCS[name]


def _uses_reflected(other):
    """CuPy's _should_use_rop: defer to `other` when it opts out of ufuncs, or has no
    __array_ufunc__ and a higher __array_priority__."""
    marker = object()
    other_ufunc = getattr(other, "__array_ufunc__", marker)
    if other_ufunc is not marker:
        return other_ufunc is None
    return getattr(other, "__array_priority__", 0) > ndarray.__array_priority__


def _binary(name, reflected=False):
    def operator(self, other):
        if not isinstance(other, ndarray) and _uses_reflected(other):
            return NotImplemented
        return get(name)(other, self) if reflected else get(name)(self, other)
    return operator


def _inplace(name):
    def operator(self, other):
        return get(name)(self, other, out=self)
    return operator


def _unary(name):
    return lambda self: get(name)(self)


def _comparison(name, default):
    def operator(self, other):
        if name in ("equal", "not_equal") and (other is None or (
                type(other).__eq__ is object.__eq__ and not isinstance(other, ndarray))):
            return wrap(numpy.full(self.shape, default))  # no element equals None
        if not isinstance(other, ndarray) and _uses_reflected(other):
            return NotImplemented
        return get(name)(self, other)
    return operator


def _matmul(self, other, reflected=False):
    a, b = (other, self) if reflected else (self, other)
    return wrap(numpy.matmul(unwrap(a), unwrap(b)))


BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
          "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "and": "bitwise_and",
          "or": "bitwise_or", "xor": "bitwise_xor", "lshift": "left_shift",
          "rshift": "right_shift"}
COMPARISONS = {"lt": "less", "le": "less_equal", "eq": "equal", "ne": "not_equal",
               "gt": "greater", "ge": "greater_equal"}
UNARY = {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}


def attach_operators():
    """Give cupy.ndarray the operators CuPy's has (no @=, as in CuPy)."""
    for op, name in BINARY.items():
        setattr(ndarray, f"__{op}__", _binary(name))
        setattr(ndarray, f"__r{op}__", _binary(name, reflected=True))
        setattr(ndarray, f"__i{op}__", _inplace(name))
    ndarray.__divmod__ = _binary("divmod")
    ndarray.__rdivmod__ = _binary("divmod", reflected=True)
    ndarray.__matmul__ = _matmul
    ndarray.__rmatmul__ = lambda self, other: _matmul(self, other, reflected=True)
    for op, name in COMPARISONS.items():
        setattr(ndarray, f"__{op}__", _comparison(name, default=(op == "ne")))
    for op, name in UNARY.items():
        setattr(ndarray, f"__{op}__", _unary(name))


attach_operators()
