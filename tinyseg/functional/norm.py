"""Batch normalisation (Ioffe & Szegedy, 2015) over (N, C, H, W) maps, with PyTorch's semantics.

For each channel c, over the M = N * H * W values x of that channel in the batch:

    mean  = sum(x) / M
    var   = sum((x - mean)^2) / M                 (biased: the one used to normalise)
    x_hat = (x - mean) / sqrt(var + eps)
    y     = gamma * x_hat + beta

Training mode normalises with the batch's mean and var, and updates the running statistics
IN PLACE (they are raw arrays, a module's buffers, not trained parameters):

    running_mean = momentum * mean + (1 - momentum) * running_mean
    running_var  = momentum * sum((x - mean)^2) / (M - 1) + (1 - momentum) * running_var

(the running variance uses the UNBIASED estimate, as torch does). Eval mode normalises with
running_mean and running_var instead, so y is then a fixed affine map of x.

Precision: everything stays in the input's dtype (float32 in training, no float64 copies).
The variance is computed in two passes, as the mean of (x - mean)^2, which avoids the
cancellation of the one-pass E[x^2] - E[x]^2 when |mean| is large next to the spread; the
channel sums use NumPy's pairwise summation (CuPy's tree reduction on the GPU).
"""
from .. import cuda_kernels
from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..parallel import for_each_channel_slab


def _channel_sum(a):
    """(N, C, H, W) -> (C,): the sum over the batch and the pixels of each channel."""
    return a.sum(axis=(0, 2, 3))


def _per_channel(v):
    """(C,) -> (1, C, 1, 1), so a per-channel vector broadcasts over (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


class BatchNorm(Function):
    """y = gamma * x_hat + beta. x: (N, C, H, W), gamma: (C,), beta: (C,) -> y: (N, C, H, W).

    Batch statistics in training mode (and an in-place update of the running statistics when
    they are given), running statistics in eval mode; see the module docstring for the math.
    Channels are independent, so forward and backward each run whole, every pass of them, on
    one cache-sized slab of channels at a time (tinyseg/parallel.py).

    relu=True fuses the ReLU that follows almost every batch norm: y = max(y, 0) and, in
    backward, g = g * (y > 0) are then one more pass over a slab still in the cache, instead
    of two more passes over the whole activation in memory.
    """

    def __init__(self, running_mean, running_var, training, momentum, eps, relu=False):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps
        self.relu = relu

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        if cuda_kernels.active(xp):
            return self.forward_with_kernels(x, gamma, beta)
        channels = x.shape[1]
        self.count = x.size // channels  # M = N * H * W values per channel
        mean = xp.empty(channels, x.dtype)
        squares = xp.empty(channels, x.dtype)  # sum of (x - mean)^2 per channel
        self.inv_std = xp.empty(channels, x.dtype)
        y = xp.empty_like(x)  # (N, C, H, W)
        # x_hat (and the ReLU's mask y > 0) are kept only for backward; without one,
        # training mode builds x_hat in y
        backward = any(self.needs_input_grad)
        self.x_hat = xp.empty_like(x) if backward else None
        self.mask = xp.empty(x.shape, bool) if backward and self.relu else None

        def normalise(c):  # channels c of every array
            x_hat = y[:, c] if self.x_hat is None else self.x_hat[:, c]
            if self.training:
                mean[c] = _channel_sum(x[:, c]) / self.count
                centered = xp.subtract(x[:, c], _per_channel(mean[c]), out=x_hat)
                squares[c] = _channel_sum(centered * centered)
                self.inv_std[c] = 1 / xp.sqrt(squares[c] / self.count + self.eps)
                centered *= _per_channel(self.inv_std[c])  # in place: x_hat
                xp.multiply(x_hat, _per_channel(gamma[c]), out=y[:, c])
                y[:, c] += _per_channel(beta[c])
            else:  # y = x * scale + shift, with scale = gamma / std, shift = beta - mean * scale
                running_mean = self.running_mean[c].astype(x.dtype, copy=False)
                self.inv_std[c] = 1 / xp.sqrt(self.running_var[c].astype(x.dtype) + self.eps)
                scale = gamma[c] * self.inv_std[c]
                xp.multiply(x[:, c], _per_channel(scale), out=y[:, c])
                y[:, c] += _per_channel(beta[c] - running_mean * scale)
                if self.x_hat is not None:
                    xp.subtract(x[:, c], _per_channel(running_mean), out=x_hat)
                    x_hat *= _per_channel(self.inv_std[c])
            if self.mask is not None:
                xp.greater(y[:, c], 0, out=self.mask[:, c])
            if self.relu:
                xp.maximum(y[:, c], 0, out=y[:, c])
        for_each_channel_slab(normalise, x)
        if self.training and self.running_mean is not None:
            self._update_running_stats(mean, squares / (self.count - 1))
        self.gamma = gamma
        return y

    def forward_with_kernels(self, x, gamma, beta, launch=cuda_kernels.cupy_launch):
        """The same forward for the GPU: the channel statistics by the array module's reductions,
        then every elementwise step in one kernel (tinyseg/cuda_kernels.py)."""
        xp = get_array_module(x)
        self.count = x.size // x.shape[1]
        if self.training:
            mean = x.mean(axis=(0, 2, 3))                                   # (C,)
            squares = _channel_sum((x - _per_channel(mean)) ** 2)           # (C,)
            var = squares / self.count
            if self.running_mean is not None:
                self._update_running_stats(mean, squares / (self.count - 1))
        else:
            mean = self.running_mean.astype(x.dtype, copy=False)
            var = self.running_var.astype(x.dtype, copy=False)
        self.inv_std = 1 / xp.sqrt(var + self.eps)
        self.gamma = gamma
        y, self.x_hat, self.mask = cuda_kernels.batch_norm_forward(
            x, mean, self.inv_std, gamma, beta, self.relu, any(self.needs_input_grad), launch)
        return y

    def backward_with_kernels(self, gy, launch=cuda_kernels.cupy_launch):
        """The same backward for the GPU: the two channel sums, then dx in one kernel."""
        g = gy * self.mask if self.relu else gy
        gbeta, ggamma = _channel_sum(g), _channel_sum(g * self.x_hat)
        gx = cuda_kernels.batch_norm_backward(gy, self.x_hat, self.mask, self.gamma, self.inv_std,
                                              gbeta, ggamma, self.training, launch)
        return gx, ggamma, gbeta

    def _update_running_stats(self, mean, unbiased_var):
        """Blend the batch statistics into the caller's running buffers, in place."""
        m = self.momentum
        self.running_mean[...] = m * mean + (1 - m) * self.running_mean
        self.running_var[...] = m * unbiased_var + (1 - m) * self.running_var

    def backward(self, gy):
        """Gradients for x, gamma and beta, with g = dL/dy (N, C, H, W).

            dbeta  = sum(g)                    (per channel, over N, H, W)
            dgamma = sum(g * x_hat)

        Eval mode: the statistics are constants, so dx = gamma / sqrt(running_var + eps) * g.

        Training mode: mean and var depend on every x of the channel too. Following the
        gradient through x_hat, the mean and the variance and collecting terms gives the
        compact formula (Ioffe & Szegedy, Sec. 3, simplified):

            dx = gamma / sqrt(var + eps) * (g - dbeta / M - x_hat * dgamma / M)

        The two subtracted terms are what flows back through the mean and the variance:
        they remove from g its per-channel mean and its component along x_hat.
        """
        xp = get_array_module(gy)
        if cuda_kernels.active(xp):
            return self.backward_with_kernels(gy)
        gbeta, ggamma = xp.empty_like(self.gamma), xp.empty_like(self.gamma)  # (C,) each
        gx = xp.empty_like(gy)  # (N, C, H, W)

        def differentiate(c):  # channels c of every array
            g, x_hat, out = gy[:, c], self.x_hat[:, c], gx[:, c]
            if self.relu:
                g = g * self.mask[:, c]  # through the ReLU first
            gbeta[c] = _channel_sum(g)
            xp.multiply(g, x_hat, out=out)  # out as scratch for g * x_hat
            ggamma[c] = _channel_sum(out)
            scale = _per_channel(self.gamma[c] * self.inv_std[c])  # (1, slab, 1, 1)
            if not self.training:
                xp.multiply(g, scale, out=out)
                return
            # the training formula, in place on out (each step one pass over the slab):
            xp.multiply(x_hat, _per_channel(-ggamma[c] / self.count), out=out)  # - x_hat dgamma / M
            out += g
            out -= _per_channel(gbeta[c] / self.count)  # - dbeta / M
            out *= scale
        for_each_channel_slab(differentiate, gy)
        return gx, ggamma, gbeta


def _check_batch_norm_args(x, running_mean, running_var, weight, bias, training):
    """Raise a one-line ValueError/TypeError for shapes or arguments batch_norm cannot use."""
    if x.ndim != 4:
        raise ValueError(f"batch_norm expects a 4-D input (N, C, H, W), got shape {x.shape}")
    channels = x.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm needs both running_mean and running_var, or neither")
    if running_mean is None and not training:
        raise ValueError("batch_norm in eval mode (training=False) needs running_mean and running_var")
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if isinstance(stat, Tensor):
            raise TypeError(f"batch_norm: {name} must be a raw array (a buffer), not a Tensor")
        if stat is not None and stat.shape != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {stat.shape}, expected ({channels},) "
                             f"for an input with {channels} channels")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and tuple(param.shape) != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(param.shape)}, expected "
                             f"({channels},) for an input with {channels} channels")
    if training and x.size // channels <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, relu=False):
    """torch.nn.functional.batch_norm for x: (N, C, H, W) -> (N, C, H, W).

    running_mean, running_var: (C,) raw arrays updated in place when training (may be None
    then: no update); weight (gamma) and bias (beta): (C,) Tensors, or None for 1 and 0.
    relu=True: relu(batch_norm(x)) in one op (see BatchNorm).
    """
    x = input if isinstance(input, Tensor) else Tensor(input)
    _check_batch_norm_args(x, running_mean, running_var, weight, bias, training)
    xp = get_array_module(x.data)
    channels = x.shape[1]
    if weight is None:
        weight = Tensor(xp.ones(channels, x.dtype))
    if bias is None:
        bias = Tensor(xp.zeros(channels, x.dtype))
    return BatchNorm(running_mean, running_var, training, momentum, eps, relu)(x, weight, bias)
