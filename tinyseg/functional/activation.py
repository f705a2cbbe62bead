"""Activations: ReLU, softmax, log-softmax, and the paper's softmax with a learned temperature.

Shapes are unchanged: x: (any shape) -> same shape; softmax normalizes along `dim`.

Softmax and its gradient (s = softmax(z), upstream gradient g = dL/ds, sums along `dim`):

    s_i = exp(z_i - max z) / sum_j exp(z_j - max z)      (subtracting max z changes nothing
                                                           but keeps exp from overflowing)
    dL/dz_i = sum_k g_k ds_k/dz_i = sum_k g_k s_k (delta_ki - s_i) = s_i (g_i - sum_k g_k s_k)

Log-softmax (y = log s = z - logsumexp(z)) and its gradient:

    dL/dz_i = g_i - s_i sum_k g_k

Adaptive-temperature softmax, the paper's Eq. (6), with a learned scalar T:

    softmax(z_i / T) = exp(z_i / T) / sum_j exp(z_j / T)

With u = z / T and dL/du from the rules above, the chain rule gives

    dL/dz = dL/du * du/dz = dL/du / T
    dL/dT = sum over EVERY element (all positions, all classes) of dL/du * du/dT
          = sum(dL/du * (-z / T^2)) = -sum(z * dL/dz) / T

T is one number shared by the whole tensor, so its gradient sums over everything.
"""
import numpy as np

from ..autograd import Function, as_tensor
from ..backend import get_array_module
from ..dispatch import choose


# ---------------------------------------------------------------- raw-array helpers
def _softmax(z, axis):
    """softmax along `axis`, stable: the max is subtracted before exp."""
    xp = get_array_module(z)
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z, axis):
    """log softmax along `axis`, stable: z - max - log(sum exp(z - max))."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def _softmax_grad(s, g, axis):
    """dL/dz = s * (g - sum(g * s)) for s = softmax(z) and g = dL/ds."""
    return s * (g - (g * s).sum(axis=axis, keepdims=True))


def _log_softmax_grad(y, g, axis):
    """dL/dz = g - softmax(z) * sum(g) for y = log_softmax(z) and g = dL/dy."""
    xp = get_array_module(y)
    return g - xp.exp(y) * g.sum(axis=axis, keepdims=True)


def _temperature(T, like):
    """The temperature as a 0-d array of z's dtype (so float32 stays float32)."""
    if T.size != 1:
        raise ValueError(f"the temperature T must hold one number, got shape {T.shape}")
    return T.reshape(()).astype(like.dtype)


# ---------------------------------------------------------------- Functions
class ReLU(Function):
    """y = max(x, 0);  dL/dx = dL/dy where x > 0, else 0."""

    def forward(self, x):
        xp = get_array_module(x)
        self.mask = x > 0
        return xp.maximum(x, 0)

    def backward(self, gy):
        return gy * self.mask


class ReLU6(Function):
    """y = min(max(x, 0), 6) (MobileNetV2);  dL/dx = dL/dy where 0 < x < 6, else 0."""

    def forward(self, x):
        xp = get_array_module(x)
        self.inside = (x > 0) & (x < 6)
        return xp.clip(x, 0, 6)

    def backward(self, gy):
        return gy * self.inside


class Softmax(Function):
    """s = softmax(z) along `dim`; backward: dL/dz = s * (g - sum(g * s))."""

    def __init__(self, dim):
        self.dim = dim

    def forward(self, z):
        self.s = _softmax(z, self.dim)
        return self.s

    def backward(self, gs):
        return _softmax_grad(self.s, gs, self.dim)


class LogSoftmax(Function):
    """y = log softmax(z) along `dim`; backward: dL/dz = g - exp(y) * sum(g)."""

    def __init__(self, dim):
        self.dim = dim

    def forward(self, z):
        self.y = _log_softmax(z, self.dim)
        return self.y

    def backward(self, gy):
        return _log_softmax_grad(self.y, gy, self.dim)


class SoftmaxWithTemperature(Function):
    """s = softmax(z / T) along `dim` (Eq. 6), T a one-element array.

    Backward, with dL/du = s * (g - sum(g * s)) for u = z / T:
        dL/dz = dL/du / T,    dL/dT = -sum(z * dL/dz) / T  (summed over all elements).
    """

    def __init__(self, dim):
        self.dim = dim

    def forward(self, z, T):
        self.z, self.T_shape = z, T.shape
        self.t = _temperature(T, z)
        self.s = _softmax(z / self.t, self.dim)
        return self.s

    def backward(self, gs):
        gz = _softmax_grad(self.s, gs, self.dim) / self.t
        gT = -(self.z * gz).sum() / self.t
        return gz, gT.reshape(self.T_shape)


class LogSoftmaxWithTemperature(Function):
    """y = log softmax(z / T) along `dim`, T a one-element array.

    Backward, with dL/du = g - exp(y) * sum(g) for u = z / T:
        dL/dz = dL/du / T,    dL/dT = -sum(z * dL/dz) / T  (summed over all elements).
    """

    def __init__(self, dim):
        self.dim = dim

    def forward(self, z, T):
        self.z, self.T_shape = z, T.shape
        self.t = _temperature(T, z)
        self.y = _log_softmax(z / self.t, self.dim)
        return self.y

    def backward(self, gy):
        gz = _log_softmax_grad(self.y, gy, self.dim) / self.t
        gT = -(self.z * gz).sum() / self.t
        return gz, gT.reshape(self.T_shape)


# ---------------------------------------------------------------- wrappers
def _temperature_tensor(T, input):
    """T as a Tensor on input's backend: a Python number takes input's dtype."""
    input = as_tensor(input)
    if np.isscalar(T):
        return input, as_tensor(T, like=input)
    return input, as_tensor(T)


def relu(input):
    return choose(ReLU, input)()(input)


def relu6(input):
    return ReLU6()(input)


def softmax(input, dim):
    return Softmax(dim)(input)


def log_softmax(input, dim):
    return LogSoftmax(dim)(input)


def softmax_with_temperature(input, T, dim=1):
    """softmax(input / T) along dim (the paper's Eq. 6); T: a Tensor of shape (1,) or (),
    whose gradient flows when it requires grad (the paper learns T, initialized to 1)."""
    return SoftmaxWithTemperature(dim)(*_temperature_tensor(T, input))


def log_softmax_with_temperature(input, T, dim=1):
    """log softmax(input / T) along dim: feed it to nll_loss for a stable Eq. (6) cross-entropy."""
    return LogSoftmaxWithTemperature(dim)(*_temperature_tensor(T, input))
