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

The variance is computed in two passes, as the mean of (x - mean)^2, which avoids the
cancellation of the one-pass E[x^2] - E[x]^2 when |mean| is large next to the spread.

This is the reference version, whole arrays; tinyseg/fast/norm.py is its twin (every pass on
one cache-sized slab of channels at a time, the ReLU fused in), chosen by tinyseg.config.
"""
from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..dispatch import choose


def per_channel(v):
    """(C,) -> (1, C, 1, 1), so a per-channel vector broadcasts over (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


def channel_sum(a):
    """(N, C, H, W) -> (C,): the sum over the batch and the pixels of each channel."""
    return a.sum(axis=(0, 2, 3))


class BatchNorm(Function):
    """y = gamma * x_hat + beta. x: (N, C, H, W), gamma: (C,), beta: (C,) -> y: (N, C, H, W).

    Batch statistics in training mode (and an in-place update of the running statistics when
    they are given), running statistics in eval mode; see the module docstring for the math.
    relu=True applies the ReLU that follows almost every batch norm: y = max(y, 0), and in
    backward g = g * (y > 0) first.
    """

    def __init__(self, running_mean, running_var, training, momentum, eps, relu=False):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps
        self.relu = relu

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        mean, var = self.statistics(x)
        self.inv_std = 1 / xp.sqrt(var + self.eps)              # (C,)
        self.x_hat = (x - per_channel(mean)) * per_channel(self.inv_std)
        self.gamma = gamma
        y = per_channel(gamma) * self.x_hat + per_channel(beta)
        if self.relu:
            self.mask = y > 0
            y = y * self.mask
        return y

    def statistics(self, x):
        """(mean, var) per channel, (C,) each: the batch's in training mode (the running ones
        updated), the running ones in eval mode. Sets self.count, M = N * H * W."""
        self.count = x.size // x.shape[1]
        if not self.training:
            return (self.running_mean.astype(x.dtype, copy=False),
                    self.running_var.astype(x.dtype, copy=False))
        mean = channel_sum(x) / self.count
        squares = channel_sum((x - per_channel(mean)) ** 2)
        if self.running_mean is not None:
            self.update_running_stats(mean, squares / (self.count - 1))
        return mean, squares / self.count

    def batch_sums(self, gbeta, ggamma):
        """dbeta and dgamma over the whole batch, which dx needs (SyncBatchNorm: all processes)."""
        return gbeta, ggamma

    def update_running_stats(self, mean, unbiased_var):
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
        g = gy * self.mask if self.relu else gy                 # through the ReLU first
        gbeta, ggamma = channel_sum(g), channel_sum(g * self.x_hat)  # (C,) each
        scale = per_channel(self.gamma * self.inv_std)           # (1, C, 1, 1)
        if not self.training:
            return g * scale, ggamma, gbeta
        batch_beta, batch_gamma = self.batch_sums(gbeta, ggamma)
        gx = scale * (g - per_channel(batch_beta / self.count)
                      - self.x_hat * per_channel(batch_gamma / self.count))
        return gx, ggamma, gbeta


class SyncBatchNorm(BatchNorm):
    """BatchNorm in training mode over a batch spread across processes: the statistics are
    those of the whole batch (tinyseg/distributed.py; comm sums arrays over the processes).

    Forward all-reduces the channel sums (and the counts), then the sums of squares about the
    global mean: the reference's two passes, over every process. Backward all-reduces dbeta
    and dgamma, which the formula for dx needs over the whole batch; the returned dgamma and
    dbeta stay this process's own, as the gradient averaging then sums them.
    """

    def __init__(self, comm, running_mean, running_var, momentum, eps, relu=False):
        super().__init__(running_mean, running_var, True, momentum, eps, relu)
        self.comm = comm

    def statistics(self, x):
        xp = get_array_module(x)
        counts = self.comm.allreduce(xp.asarray([x.size // x.shape[1]], dtype="float64"))
        self.count = int(counts[0])                              # M over all processes
        if self.count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {self.count} "
                             "over all processes")
        mean = self.comm.allreduce(channel_sum(x)) / self.count  # (C,)
        squares = self.comm.allreduce(channel_sum((x - per_channel(mean)) ** 2))
        if self.running_mean is not None:
            self.update_running_stats(mean, squares / (self.count - 1))
        return mean, squares / self.count

    def batch_sums(self, gbeta, ggamma):
        xp = get_array_module(gbeta)
        total = self.comm.allreduce(xp.concatenate([gbeta, ggamma]))
        return total[:len(gbeta)], total[len(gbeta):]


def _check_batch_norm_args(x, running_mean, running_var, weight, bias, training, need_running=True):
    """Raise a one-line ValueError/TypeError for shapes or arguments batch_norm cannot use."""
    if x.ndim != 4:
        raise ValueError(f"batch_norm expects a 4-D input (N, C, H, W), got shape {x.shape}")
    channels = x.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm needs both running_mean and running_var, or neither")
    if running_mean is None and not training and need_running:
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
    function = choose(BatchNorm, x)(running_mean, running_var, training, momentum, eps, relu)
    return function(x, weight, bias)


def sync_batch_norm(input, running_mean, running_var, weight, bias, comm, momentum=0.1,
                    eps=1e-5, relu=False):
    """batch_norm in training mode with the statistics of the batch of every process (comm:
    a communicator of tinyseg/distributed.py)."""
    x = input if isinstance(input, Tensor) else Tensor(input)
    _check_batch_norm_args(x, running_mean, running_var, weight, bias, training=False,
                           need_running=False)  # the count: checked over all processes
    xp = get_array_module(x.data)
    weight = Tensor(xp.ones(x.shape[1], x.dtype)) if weight is None else weight
    bias = Tensor(xp.zeros(x.shape[1], x.dtype)) if bias is None else bias
    return SyncBatchNorm(comm, running_mean, running_var, momentum, eps, relu)(x, weight, bias)
