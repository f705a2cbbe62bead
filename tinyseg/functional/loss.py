"""Losses: pixel-wise cross-entropy with ignored labels, NLL, and MSE (the paper's Eq. 4).

cross_entropy / nll_loss:
    input (N, C, H, W) scores, target (N, H, W) integer classes -> () for 'mean' and 'sum',
    (N, H, W) for 'none'. Also input (N, C) with target (N,) (any number of spatial axes works).

For one pixel with class scores z and true class t, cross-entropy is

    loss = -log softmax(z)_t = -z_t + log sum_j exp(z_j),     dloss/dz = softmax(z) - onehot(t).

Pixels whose label is `ignore_index` (255 marks object borders in PASCAL VOC) count for
nothing: their loss and gradient are 0, and 'mean' divides by the number of OTHER pixels.
This is torch's rule; like torch, 'mean' over a batch where every pixel is ignored is nan
(0 / 0), and its gradient is 0. The default ignore_index is 255 (VOC's border label), not
torch's -100.

Fusing log-softmax and NLL into one op keeps it stable (no log of a rounded-to-zero
probability) and gives the short backward above. nll_loss takes log-probabilities instead (e.g.
from log_softmax_with_temperature, the paper's Eq. 6). mse_loss is the regression loss of
Eq. (4), ||F - Y~||^2, averaged over elements for 'mean'.
"""
from ..autograd import Function, Tensor, as_tensor
from ..backend import device_of, get_array_module, to_device, to_numpy
from .activation import _log_softmax

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------- checks
def _check_reduction(reduction, name):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_target(input, target, ignore_index, name):
    """The labels as an integer array on input's device; a one-line ValueError if they do not fit.

    input: (N, C, *spatial); target: (N, *spatial) with values in [0, C) or == ignore_index.
    """
    if input.ndim < 2:
        raise ValueError(f"{name}: input must be (N, C) or (N, C, H, W), got shape {input.shape}")
    target = target.data if isinstance(target, Tensor) else target
    target = to_device(target, device_of(input.data))
    if target.dtype.kind not in "iu":
        raise ValueError(f"{name}: target must hold integer class indices, "
                         f"got dtype {target.dtype}")
    expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{name}: target has shape {target.shape}, expected {expected} "
                         f"for input of shape {input.shape}")
    xp = get_array_module(target)
    num_classes = input.shape[1]
    fits = ((target >= 0) & (target < num_classes)) | (target == ignore_index)
    if not bool(fits.all()):
        bad = to_numpy(xp.unique(target[~fits]))
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"{name}: target holds values [{shown}] outside the classes "
                         f"[0, {num_classes}) that are not ignore_index={ignore_index}")
    return target


# ---------------------------------------------------------------- reductions
def _reduce(losses, count, reduction):
    """Per-element losses (N, ...) -> the reduced loss; 'mean' divides by `count` (0/0 = nan)."""
    xp = get_array_module(losses)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    return xp.where(count > 0, total / xp.maximum(count, 1), xp.nan).astype(losses.dtype)


def _reduce_grad(gy, shape, count, reduction):
    """Upstream gradient of the reduced loss -> dL/d(per-element losses), of `shape`."""
    xp = get_array_module(gy)
    if reduction == "none":
        return gy
    if reduction == "mean":
        gy = gy / xp.maximum(count, 1)  # no pixel counted: the gradient is 0, as in torch
    return xp.broadcast_to(gy, shape)


def _one_hot(target, num_classes, dtype):
    """(N, *spatial) class indices -> (N, C, *spatial) one-hot array of `dtype`."""
    xp = get_array_module(target)
    classes = xp.arange(num_classes).reshape((1, num_classes) + (1,) * (target.ndim - 1))
    return (target[:, None] == classes).astype(dtype)  # (N, 1, ...) == (1, C, 1, ...)


def _pick(values, target):
    """values[n, target[n, ...], ...]: (N, C, *spatial) -> (N, *spatial)."""
    xp = get_array_module(values)
    return xp.take_along_axis(values, target[:, None], axis=1)[:, 0]


# ---------------------------------------------------------------- Functions
class CrossEntropy(Function):
    """loss = -log softmax(x)[target] per counted pixel, reduced.

    x: (N, C, *spatial), target: (N, *spatial) ints -> () or (N, *spatial).
    Backward: dL/dx = (softmax(x) - onehot(target)) * dL/dloss_pixel, 0 at ignored pixels;
    for 'mean', dL/dloss_pixel = upstream / (number of counted pixels).
    """

    def __init__(self, ignore_index, reduction):
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, x, target):
        xp = get_array_module(x)
        log_p = _log_softmax(x, axis=1)                    # (N, C, *spatial)
        self.valid = target != self.ignore_index           # (N, *spatial)
        self.target = xp.where(self.valid, target, 0)      # ignored pixels point at class 0 ...
        losses = xp.where(self.valid, -_pick(log_p, self.target), 0)  # ... and are zeroed here
        self.p = xp.exp(log_p)
        self.count = self.valid.sum().astype(x.dtype)
        return _reduce(losses, self.count, self.reduction)

    def backward(self, gy):
        g = _reduce_grad(gy, self.valid.shape, self.count, self.reduction) * self.valid
        gx = self.p - _one_hot(self.target, self.p.shape[1], self.p.dtype)  # (N, C, *spatial)
        return gx * g[:, None], None


class NLLLoss(Function):
    """loss = -log_p[target] per counted pixel, reduced; log_p: (N, C, *spatial) log-probabilities.

    Backward: dL/dlog_p = -onehot(target) * dL/dloss_pixel, 0 at ignored pixels.
    """

    def __init__(self, ignore_index, reduction):
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, log_p, target):
        xp = get_array_module(log_p)
        self.valid = target != self.ignore_index           # (N, *spatial)
        self.target = xp.where(self.valid, target, 0)
        self.num_classes, self.dtype = log_p.shape[1], log_p.dtype
        losses = xp.where(self.valid, -_pick(log_p, self.target), 0)
        self.count = self.valid.sum().astype(log_p.dtype)
        return _reduce(losses, self.count, self.reduction)

    def backward(self, gy):
        g = _reduce_grad(gy, self.valid.shape, self.count, self.reduction) * self.valid
        one_hot = _one_hot(self.target, self.num_classes, self.dtype)  # (N, C, *spatial)
        return -one_hot * g[:, None], None


class MSELoss(Function):
    """loss = (x - y)^2 per element, reduced ('mean': over all elements). Eq. (4) of the paper.

    Backward: dL/dx = 2 (x - y) * dL/dloss_element,  dL/dy = -dL/dx.
    """

    def __init__(self, reduction):
        self.reduction = reduction

    def forward(self, x, y):
        self.diff = x - y
        self.count = get_array_module(x).asarray(x.size, dtype=x.dtype)
        return _reduce(self.diff ** 2, self.count, self.reduction)

    def backward(self, gy):
        g = _reduce_grad(gy, self.diff.shape, self.count, self.reduction)
        gx = 2 * self.diff * g
        return gx, -gx


# ---------------------------------------------------------------- wrappers
def cross_entropy(input, target, ignore_index=255, reduction="mean"):
    """Mean (or 'sum', or per-pixel 'none') cross-entropy of logits (N, C, ...), labels (N, ...)."""
    input = as_tensor(input)
    _check_reduction(reduction, "cross_entropy")
    target = _check_target(input, target, ignore_index, "cross_entropy")
    return CrossEntropy(ignore_index, reduction)(input, target)


def nll_loss(input, target, ignore_index=255, reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C, ...) vs labels (N, ...)."""
    input = as_tensor(input)
    _check_reduction(reduction, "nll_loss")
    target = _check_target(input, target, ignore_index, "nll_loss")
    return NLLLoss(ignore_index, reduction)(input, target)


def mse_loss(input, target, reduction="mean"):
    """Mean (or 'sum', or elementwise 'none') squared error; input and target of the same shape."""
    input, target = as_tensor(input), as_tensor(target)
    _check_reduction(reduction, "mse_loss")
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input has shape {input.shape} but target has {target.shape}; "
                         f"they must match")
    return MSELoss(reduction)(input, target)
