"""Elementwise arithmetic, reductions, shape ops and matmul: the algebra under every layer.

Each op is a Function with `forward` and `backward` side by side. Elementwise ops broadcast
like NumPy; their backward reduces the gradient back to each input's shape with `sum_to`
(a gradient that was broadcast over an axis is summed over that axis).
"""
import itertools

from ..autograd import Function, Tensor, as_tensor
from ..backend import get_array_module


def sum_to(grad, shape):
    """Sum `grad` over the axes that broadcasting added or stretched, so it has `shape`.

    Example: x of shape (3, 1) + y of shape (4,) gives (3, 4); the gradient for x is the
    (3, 4) gradient summed over axis 1 (kept), for y summed over axis 0.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    stretched = tuple(extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    grad = grad.sum(axis=tuple(range(extra)) + stretched, keepdims=True)
    return grad.reshape(shape)


def _pair(a, b):
    """Two operands as Tensors; a Python number takes the other operand's dtype."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    return as_tensor(a, like=b), b


# ---------------------------------------------------------------- elementwise arithmetic
class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return sum_to(gy * self.b, self.a.shape), sum_to(gy * self.a, self.b.shape)


class Div(Function):
    """y = a / b;  dy/da = 1/b,  dy/db = -a/b^2."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = gy / self.b
        gb = -ga * self.a / self.b
        return sum_to(ga, self.a.shape), sum_to(gb, self.b.shape)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x^p for a constant exponent p;  dy/dx = p x^(p-1)."""

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy):
        return gy * self.exponent * self.x ** (self.exponent - 1)


class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x


# ---------------------------------------------------------------- reductions
class Sum(Function):
    """Sum over `axis` (None: all); backward broadcasts the gradient back to x's shape."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        if not self.keepdims and self.axis is not None:
            axes = (self.axis,) if isinstance(self.axis, int) else self.axis
            axes = sorted(a % len(self.shape) for a in axes)
            for a in axes:  # put back the reduced axes as size 1
                gy = xp.expand_dims(gy, a)
        return xp.broadcast_to(gy, self.shape).copy()


# ---------------------------------------------------------------- shapes
class Reshape(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class Transpose(Function):
    """Permute axes (reverse them when `axes` is None); backward applies the inverse."""

    def __init__(self, axes=None):
        self.axes = None if axes is None else tuple(axes)

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return gy.transpose()
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return gy.transpose(inverse)


class Concat(Function):
    """Join tensors along `axis` (channels: axis=1); backward splits the gradient."""

    def __init__(self, axis=1):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        cuts = list(itertools.accumulate(self.sizes))[:-1]  # where each input ends
        return tuple(xp.split(gy, cuts, axis=self.axis))


def scatter_add(shape, index, values):
    """zeros(shape) with `values` (the shape of zeros[index]) added at [index], an element picked
    several times by a fancy index getting the sum of its values, in a fixed order.

    (xp.add.at does this in one call, but on the GPU with atomic adds, whose order, and so the
    float rounding of the sums, changes from run to run.) Here: the flat position of every
    picked element, sorted (stable); the k-th pick of each position is added in pass k, and
    within a pass no position repeats, so every sum runs in the order of the picks.
    """
    xp = get_array_module(values)
    size = 1
    for n in shape:
        size *= n
    positions = xp.arange(size).reshape(shape)[index].ravel()  # where each picked element lives
    values = values.ravel()
    order = xp.argsort(positions, kind="stable")
    positions, values = positions[order], values[order]
    rank = xp.arange(positions.size) - xp.searchsorted(positions, positions)  # k-th pick of its position
    out = xp.zeros(size, values.dtype)
    for k in range(int(rank.max()) + 1 if rank.size else 0):
        pick = rank == k
        out[positions[pick]] += values[pick]
    return out.reshape(shape)


class GetItem(Function):
    """x[index] for basic slicing and integer/boolean indexing; backward scatters into zeros."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        xp = get_array_module(gy)
        index = self.index if isinstance(self.index, tuple) else (self.index,)
        if not all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in index):
            return scatter_add(self.shape, self.index, gy)  # fancy indexing may repeat: sum them
        gx = xp.zeros(self.shape, self.dtype)
        gx[self.index] = gy  # basic indexing: every element is picked at most once
        return gx


class MatMul(Function):
    """y = a @ b for 2-D a (m, k) and b (k, n);  da = gy b^T,  db = a^T gy."""

    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul expects 2-D operands, got {a.shape} and {b.shape}")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        return gy @ self.b.T, self.a.T @ gy


# ---------------------------------------------------------------- wrappers
def add(a, b):
    return Add()(*_pair(a, b))


def sub(a, b):
    return Sub()(*_pair(a, b))


def mul(a, b):
    return Mul()(*_pair(a, b))


def div(a, b):
    return Div()(*_pair(a, b))


def neg(x):
    return Neg()(x)


def pow(x, exponent):
    return Pow(exponent)(x)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def sum(x, axis=None, keepdims=False):
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    """Sum divided by the number of summed elements."""
    x = as_tensor(x)
    if axis is None:
        count = x.size
    else:
        axes = (axis,) if isinstance(axis, int) else axis
        count = 1
        for a in axes:
            count *= x.shape[a]
    return mul(sum(x, axis, keepdims), 1.0 / count)


def reshape(x, shape):
    return Reshape(shape)(x)


def transpose(x, axes=None):
    return Transpose(axes)(x)


def cat(tensors, dim=1):
    """Concatenate along `dim` (torch.cat's name)."""
    return Concat(dim)(*tensors)


def getitem(x, index):
    return GetItem(index)(x)


def matmul(a, b):
    return MatMul()(a, b)
