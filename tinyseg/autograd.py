"""Reverse-mode automatic differentiation: Tensor, Function, backward, no_grad.

The whole idea fits on a page:

* A `Tensor` holds an array (`data`, NumPy or CuPy) and, after `backward()`, its gradient
  (`grad`, an array of the same shape on the same backend).
* Every op is a `Function` subclass with two methods written side by side: `forward(*arrays)`
  computes outputs from raw arrays and saves what the gradient will need on `self`;
  `backward(*grad_outputs)` turns the gradient of the loss w.r.t. each output into the
  gradient w.r.t. each input (the chain rule, one op at a time).
* Calling a Function on Tensors records it as the outputs' `creator`, so the outputs remember
  the graph that made them. `loss.backward()` walks that graph from the loss back to the
  leaves in reverse topological order, summing the gradients of a tensor used more than once.
  Functions of the same depth run latest-created first, so the sums, and the run, are the same
  every time (floating-point addition is not associative).

Gradients are kept only for leaves that ask for them (`requires_grad=True`, e.g. parameters),
as in PyTorch; gradients of intermediate tensors live only during the backward pass.
"""
import contextlib
import heapq
import itertools
import weakref

import numpy as np

from .backend import device_of, get_array_module, to_device

_grad_enabled = True
_creation_order = itertools.count()  # numbers the Functions that record a graph


def is_grad_enabled():
    """False inside `no_grad()`: ops then record no graph and save nothing for backward."""
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Inference mode: `with no_grad(): y = model(x)` builds no graph (less memory, faster)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def _as_array(data):
    """Arrays stay as they are; Python numbers and lists become float32 arrays like torch's."""
    if isinstance(data, np.ndarray) or get_array_module(data) is not np:
        return data
    if isinstance(data, np.generic):  # a NumPy scalar, e.g. what x.sum() returns: keep its dtype
        return np.asarray(data)
    array = np.asarray(data)
    return array.astype(np.float32) if array.dtype == np.float64 else array


class Tensor:
    """An array that remembers how it was made, so gradients can flow back through it.

    >>> x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad                     # d(sum x^2)/dx = 2x
    array([2., 4.])
    """

    __array_priority__ = 100  # so that `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, name=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data)
        self.grad = None
        self.requires_grad = requires_grad
        self.creator = None  # the Function that produced this tensor (None for leaves)
        self.generation = 0  # depth in the graph; orders the backward pass
        self.name = name

    # ------------------------------------------------------------------ array-like facts
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        return device_of(self.data)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when needed)."""
        return to_device(self.data, "cpu")

    def item(self):
        return self.data.item()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device):
        """A copy on "cpu" (NumPy) or "cuda" (CuPy); the gradient is not copied."""
        return Tensor(to_device(self.data, device), requires_grad=self.requires_grad)

    def zero_grad(self):
        self.grad = None

    # ------------------------------------------------------------------ backward
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into `leaf.grad` for every leaf that requires grad.

        grad: the upstream gradient, same shape as self; may be omitted for a one-element
        tensor (a loss), where it is 1. Without `retain_graph` the graph is freed on the way,
        so a second `backward()` through it raises an error.
        """
        xp = get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element tensor, got shape "
                    f"{self.shape}; pass grad= of that shape")
            grad = xp.ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape}, tensor has {self.shape}")
        if self.creator is None:
            self._accumulate(grad)
            return

        # id(tensor) -> (tensor, gradient flowing into it); holding the tensor keeps it alive
        # until its creator has used the gradient, even after the graph above it is freed
        grads = {id(self): (self, grad)}
        pending, seen = [], set()

        def schedule(function):
            if id(function) not in seen:
                seen.add(id(function))
                # heapq pops the smallest key: deepest first, and among equals the latest
                # created (not the memory address, which changes from run to run)
                heapq.heappush(pending, (-function.generation, -function.sequence, function))

        schedule(self.creator)
        while pending:
            _, _, function = heapq.heappop(pending)
            if function.inputs is None:
                raise RuntimeError(
                    "backward() through a graph that was already freed; call backward("
                    "retain_graph=True) the first time if you need a second pass")
            grad_outputs = []
            for ref in function.outputs:
                out = ref()
                _, g = grads.pop(id(out), (None, None)) if out is not None else (None, None)
                if g is None:  # an output that did not reach the loss: its gradient is zero
                    g = xp.zeros(function.output_shapes[len(grad_outputs)],
                                 function.output_dtypes[len(grad_outputs)])
                grad_outputs.append(g)
            grad_inputs = function.backward(*grad_outputs)
            if not isinstance(grad_inputs, tuple):
                grad_inputs = (grad_inputs,)
            for x, gx in zip(function.inputs, grad_inputs):
                if gx is None or not x.requires_grad:
                    continue
                if gx.shape != x.shape:
                    raise RuntimeError(f"{type(function).__name__}.backward returned a gradient of "
                                       f"shape {gx.shape} for an input of shape {x.shape}")
                if x.creator is None:
                    x._accumulate(gx, owned=_owned(gx, grad_outputs, grad_inputs))
                else:
                    _, previous = grads.get(id(x), (None, None))
                    grads[id(x)] = (x, gx if previous is None else previous + gx)
                    schedule(x.creator)
            if not retain_graph:
                function.inputs = None  # frees the graph (and the arrays saved for backward)

    def _accumulate(self, grad, owned=False):
        """Add grad to self.grad. The first gradient is kept as it is when `owned` (no one
        else holds the array), else copied, so that no two tensors share one gradient array."""
        if self.requires_grad:
            if self.grad is None:
                self.grad = grad if owned else grad.copy()
            else:
                self.grad = self.grad + grad

    # ------------------------------------------------------------------ operators
    def __add__(self, other):
        return _math.add(self, other)

    def __radd__(self, other):
        return _math.add(other, self)

    def __sub__(self, other):
        return _math.sub(self, other)

    def __rsub__(self, other):
        return _math.sub(other, self)

    def __mul__(self, other):
        return _math.mul(self, other)

    def __rmul__(self, other):
        return _math.mul(other, self)

    def __truediv__(self, other):
        return _math.div(self, other)

    def __rtruediv__(self, other):
        return _math.div(other, self)

    def __neg__(self):
        return _math.neg(self)

    def __pow__(self, exponent):
        return _math.pow(self, exponent)

    def __matmul__(self, other):
        return _math.matmul(self, other)

    def __getitem__(self, index):
        return _math.getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return _math.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _math.mean(self, axis, keepdims)

    def exp(self):
        return _math.exp(self)

    def log(self):
        return _math.log(self)

    def reshape(self, *shape):
        return _math.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return _math.transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    @property
    def T(self):
        return _math.transpose(self)


def _owned(gx, grad_outputs, grad_inputs):
    """True when a backward's result gx shares no memory with its upstream gradients (e.g. a
    reshape of dL/dy) or with the gradient it returned for another input (Add returns dL/dy
    twice): then gx is the backward's own new array, and a leaf may keep it without a copy
    (as PyTorch's AccumulateGrad does; most parameter gradients are large, e.g. 9 MB for a
    3x3 conv of 512 channels)."""
    xp = get_array_module(gx)
    if sum(g is gx for g in grad_inputs) > 1:
        return False
    others = list(grad_outputs) + [g for g in grad_inputs if g is not None and g is not gx]
    return not any(xp.may_share_memory(gx, other) for other in others)


def as_tensor(x, like=None):
    """Wrap an array or number as a Tensor; numbers take `like`'s dtype and backend."""
    if isinstance(x, Tensor):
        return x
    if like is not None and np.isscalar(x):
        xp = get_array_module(like.data)
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(x)


class Function:
    """One differentiable op: subclasses define `forward` and `backward` on raw arrays.

    `forward(*arrays)` returns one array or a tuple of arrays and may save on `self` what
    `backward` needs. `backward(*grad_outputs)` gets one gradient per output and returns one
    gradient per input (None for an input that has no gradient, e.g. integer labels): new
    arrays, or views of its grad_outputs, never an array it keeps (a leaf may keep what it
    gets as its .grad). `self.needs_input_grad[i]` tells forward and backward whether input
    i wants a gradient, so work for gradients nobody asked for can be skipped.
    """

    def __call__(self, *inputs):
        inputs = [as_tensor(x) for x in inputs]
        self.needs_input_grad = tuple(_grad_enabled and x.requires_grad for x in inputs)
        outputs = self.forward(*[x.data for x in inputs])
        single = not isinstance(outputs, tuple)
        outputs = [Tensor(y) for y in ((outputs,) if single else outputs)]
        if any(self.needs_input_grad):
            self.generation = max(x.generation for x in inputs)
            self.sequence = next(_creation_order)
            for y in outputs:
                y.creator, y.requires_grad, y.generation = self, True, self.generation + 1
            self.inputs = inputs
            self.outputs = [weakref.ref(y) for y in outputs]
            self.output_shapes = [y.shape for y in outputs]
            self.output_dtypes = [y.dtype for y in outputs]
        return outputs[0] if single else tuple(outputs)

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def backward(self, *grad_outputs):
        raise NotImplementedError(f"{type(self).__name__} must define backward()")


from .functional import math as _math  # noqa: E402  (the ops need Tensor and Function first)
