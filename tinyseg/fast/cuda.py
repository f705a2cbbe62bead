"""The GPU's twins: the reference ops with their hot loops as CUDA kernels
(tinyseg/fast/cuda_kernels.py), used on CuPy arrays when tinyseg.config.cuda_kernels is on.

    KernelConv2d        im2col, col2im and the depthwise products as kernels
    KernelBatchNorm     the channel sums by CuPy's reductions, every elementwise step in one kernel
    fused_dupsample_cross_entropy
                        the DUpsampling loss (1x1 conv, depth-to-space, log-softmax with
                        temperature, NLL) as one op: the (N, C, H, W) scores are never stored

`launch` runs a kernel; tests swap it for tests/cuda_emulator.py's to run these twins on NumPy
arrays (the kernels compiled as C++).
"""
from ..autograd import Function, Tensor, as_tensor
from ..backend import device_of, get_array_module, to_device
from ..functional.dupsample import _check_4d, _check_ratio, _fixed, projection_grads
from ..functional.norm import BatchNorm, channel_sum
from . import cuda_kernels
from .conv import SlabConv2d

launch = cuda_kernels.cupy_launch


class KernelConv2d(SlabConv2d):
    """Conv2d (same arguments and results): SlabConv2d with its gathers as CUDA kernels."""

    def im2col(self, x, kernel):
        return cuda_kernels.im2col(x, kernel, self.stride, self.padding, self.dilation,
                                   self.out_size, launch=launch)

    def col2im(self, gcol):
        return cuda_kernels.col2im(gcol, self.x_shape[2:], self.stride, self.padding,
                                   self.dilation, launch=launch)

    def depthwise_forward(self, x, weight):
        return cuda_kernels.depthwise_forward(x, weight, self.stride, self.padding,
                                              self.dilation, self.out_size, launch=launch)

    def depthwise_grads(self, gy, need_gx, need_gw):
        args = (self.stride, self.padding, self.dilation)
        gx = gw = None
        if need_gx:
            gx = cuda_kernels.depthwise_grad_input(gy, self.weight, self.x_shape, *args, launch=launch)
        if need_gw:
            gw = cuda_kernels.depthwise_grad_weight(gy, self.x, self.weight.shape[2:], *args,
                                                    launch=launch)
        return gx, gw


class KernelBatchNorm(BatchNorm):
    """BatchNorm (same arguments and results): the statistics by reductions, the rest in one
    kernel per pass."""

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        mean, var = self.statistics(x)
        self.inv_std = 1 / xp.sqrt(var + self.eps)
        self.gamma = gamma
        y, self.x_hat, self.mask = cuda_kernels.batch_norm_forward(
            x, mean, self.inv_std, gamma, beta, self.relu, any(self.needs_input_grad), launch)
        return y

    def backward(self, gy):
        g = gy * self.mask if self.relu else gy
        gbeta, ggamma = channel_sum(g), channel_sum(g * self.x_hat)
        gx = cuda_kernels.batch_norm_backward(gy, self.x_hat, self.mask, self.gamma, self.inv_std,
                                              gbeta, ggamma, self.training, launch)
        return gx, ggamma, gbeta


class DUpsampleCrossEntropy(Function):
    """The mean cross-entropy of softmax(DUpsample(F) / T) against labels, Eqs. (5), (6) and the
    loss as ONE op: F (N, C~, h, w), W, mean, T (1,), labels (N, H, W) -> ().

    The 1x1 conv v = f W^T is a GEMM; then one CUDA thread per labelled pixel reads its C scores
    straight from v where depth-to-space would take them, and writes its loss and its gradient
    in v's layout, so the scores, their log-softmax and its gradient are never stored. H <= h r
    and W <= w r: the scores are cropped to the labels, as the network does.
    """

    def __init__(self, ratio, ignore_index):
        self.ratio, self.ignore_index = ratio, ignore_index

    def forward(self, F, W, mean, T, labels):
        xp = get_array_module(F)
        n, k, h, w = F.shape
        self.F_shape, self.W, self.T_shape = F.shape, W, T.shape
        self.f = F.transpose(0, 2, 3, 1).reshape(n * h * w, k)  # (N*h*w, C~): a feature per row
        v = self.f @ W.T                                         # (N*h*w, r*r*C)
        losses, self.grad_v, grad_t = cuda_kernels.dupsample_cross_entropy(
            v, mean, T, labels, self.ratio, self.ignore_index, launch=launch)
        self.count = (labels != self.ignore_index).sum().astype(F.dtype)  # 0: NaN, as nll_loss
        self.grad_t = grad_t.sum()
        return xp.asarray(losses.sum() / self.count)

    def backward(self, g):
        scale = g / get_array_module(g).maximum(self.count, 1)  # no labelled pixel: 0, as nll_loss
        g_F, g_W, g_mean = projection_grads(self.grad_v * scale, self.f, self.W, self.F_shape,
                                            self.needs_input_grad)
        g_T = (self.grad_t * scale).reshape(self.T_shape) if self.needs_input_grad[3] else None
        return g_F, g_W, g_mean, g_T, None


def fused_dupsample_cross_entropy(input, W, mean, T, target, ratio, ignore_index=255):
    """functional.dupsample_cross_entropy as one op (DUpsampleCrossEntropy); the same checks."""
    input = as_tensor(input)
    _check_ratio(ratio, "dupsample_cross_entropy")
    _check_4d(input, "dupsample_cross_entropy")
    W, mean, T = _fixed(W, input), _fixed(mean, input), as_tensor(T, like=input)
    target = to_device(target.data if isinstance(target, Tensor) else target, device_of(input.data))
    n, _, h, w = input.shape
    num_classes = W.shape[0] // (ratio * ratio)
    if target.ndim != 3 or target.shape[0] != n or -(-target.shape[1] // ratio) != h \
            or -(-target.shape[2] // ratio) != w:
        raise ValueError(f"dupsample_cross_entropy: labels of shape {tuple(target.shape)} do not "
                         f"fit features {tuple(input.shape)} at ratio {ratio}")
    labels = target[target != ignore_index]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"dupsample_cross_entropy: labels must be in [0, {num_classes}) or "
                         f"{ignore_index}, got values from {int(labels.min())} to "
                         f"{int(labels.max())}")
    return DUpsampleCrossEntropy(ratio, ignore_index)(input, W, mean, T, target)
