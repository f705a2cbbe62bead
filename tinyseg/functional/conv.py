"""2-D convolution (stride, padding, dilation, groups) built on im2col and col2im.

A convolution is a matrix product in disguise. For every output pixel, gather the input
values under the kernel into one column ("im2col"); then

    y[n, o, p] = sum_k W[o, k] col[n, k, p] + b[o],      k = (c, i, j) runs over C_in * kH * kW

is one GEMM per image: (C_out, K) @ (K, H_out * W_out). The backward pass is two more GEMMs,

    dW = sum_n dy[n] col[n]^T        (C_out, L) @ (L, K)
    dcol[n] = W^T dy[n]              (K, C_out) @ (C_out, L)

and "col2im" scatters dcol back onto the input pixels it was gathered from, summing the
overlaps (a pixel seen by several kernel taps receives several gradients).

im2col and col2im loop over the kH * kW kernel taps, never over pixels: the input that tap
(i, j) sees, for all output pixels at once, is one strided slice of the padded input
(`_tap_slices`), as in Chainer's utils/conv.py. With groups, the channels split into G
independent convolutions, done together as one batched matmul over a group axis.

A depthwise convolution (groups = C_in = C_out, one kH x kW filter per channel, Xception's
main op) has only kH * kW weights per channel: it takes its own branch, `depthwise.py`, which
works channel by channel on a few channels at a time.

Everything but the GEMMs runs on cache-sized slabs of channels, spread over the CPU's cores
(tinyseg/parallel.py); the GEMMs are multithreaded by the BLAS. On the GPU, TINYSEG_CUDNN=1
hands the three convolutions to cuDNN instead (tinyseg/cudnn.py).
"""
import numpy as np

from .. import cuda_kernels, cudnn
from ..autograd import Function
from ..backend import get_array_module
from ..parallel import for_each_channel_slab
from . import depthwise


def as_pair(value, name):
    """An int or a pair of ints as a pair (height, width); shared by the conv and pooling ops."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size, kernel, stride, padding, dilation):
    """Output length along one axis: floor((size + 2 pad - dilation (kernel - 1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pad(x, padding):
    """x: (N, C, H, W) -> (N, C, H + 2 ph, W + 2 pw), zeros around (no copy when padding is 0)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    return padded


def _tap_slices(i, j, out_size, stride, dilation):
    """The (rows, cols) slices of the padded input that kernel tap (i, j) sees.

    Output pixel (p, q) reads padded input pixel (p sh + i dh, q sw + j dw), so over all
    output pixels tap (i, j) reads rows i dh, i dh + sh, ..., i dh + (H_out - 1) sh: a slice.
    """
    (oh, ow), (sh, sw), (dh, dw) = out_size, stride, dilation
    rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
    cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
    return rows, cols


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Gather the input under every kernel position into columns.

    x: (N, C, H, W) -> col: (N, C, kH, kW, H_out, W_out), where
    col[n, c, i, j, p, q] = x_padded[n, c, p sh + i dh, q sw + j dw].
    Reshaped to (N, C kH kW, H_out W_out) it is the right operand of the forward GEMM.
    The channels are independent: each slab of them is padded and gathered on its own
    (tinyseg/parallel.py), so the padded slab is still in the cache for its kH * kW copies.
    """
    xp = get_array_module(x)
    kh, kw = as_pair(kernel_size, "kernel_size")
    stride, padding = as_pair(stride, "stride"), as_pair(padding, "padding")
    dilation = as_pair(dilation, "dilation")
    n, c, h, w = x.shape
    out_size = (conv_output_size(h, kh, stride[0], padding[0], dilation[0]),
                conv_output_size(w, kw, stride[1], padding[1], dilation[1]))
    if cuda_kernels.active(xp):  # the same gather as one CUDA kernel
        return cuda_kernels.im2col(x, (kh, kw), stride, padding, dilation, out_size)
    col = xp.empty((n, c, kh, kw) + out_size, dtype=x.dtype)

    def gather(channels):
        padded = _pad(x[:, channels], padding)  # (N, slab, Hp, Wp)
        for i in range(kh):
            for j in range(kw):
                rows, cols = _tap_slices(i, j, out_size, stride, dilation)
                col[:, channels, i, j] = padded[:, :, rows, cols]
    for_each_channel_slab(gather, x)
    return col


def col2im(col, input_size, stride=1, padding=0, dilation=1):
    """The adjoint of im2col: add every column entry back onto the pixel it came from.

    col: (N, C, kH, kW, H_out, W_out) -> (N, C, H, W) with input_size = (H, W). Pixels seen by
    several taps sum their entries (this is what makes it the gradient of im2col). Like im2col,
    slab by slab of channels: the padded sums of a slab stay in the cache over the taps.
    """
    xp = get_array_module(col)
    n, c, kh, kw, oh, ow = col.shape
    (h, w), stride = input_size, as_pair(stride, "stride")
    (ph, pw), dilation = as_pair(padding, "padding"), as_pair(dilation, "dilation")
    if cuda_kernels.active(xp):  # one CUDA thread per pixel, summing the taps that read it
        return cuda_kernels.col2im(col, (h, w), stride, (ph, pw), dilation)
    x = xp.empty((n, c, h, w), dtype=col.dtype)

    def scatter(channels):
        padded = xp.zeros((n, x[:, channels].shape[1], h + 2 * ph, w + 2 * pw), dtype=col.dtype)
        for i in range(kh):
            for j in range(kw):
                rows, cols = _tap_slices(i, j, (oh, ow), stride, dilation)
                padded[:, :, rows, cols] += col[:, channels, i, j]
        x[:, channels] = padded[:, :, ph:ph + h, pw:pw + w]
    for_each_channel_slab(scatter, x)
    return x


# ---------------------------------------------------------------- the op
class Conv2d(Function):
    """y = conv2d(x, W) + b.  x: (N, C_in, H, W), W: (C_out, C_in / G, kH, kW), b: (C_out,)
    -> y: (N, C_out, H_out, W_out), with H_out = floor((H + 2 ph - dh (kH - 1) - 1) / sh) + 1.

    Dense path: y[n, g] = W[g] @ col[n, g] for every image n and group g, in one batched matmul.
    Depthwise path (G = C_in = C_out): one small product per channel (depthwise.py).
    On the GPU, TINYSEG_CUDNN=1 computes y, dx and dW with cuDNN instead (tinyseg/cudnn.py).
    Arguments are checked by the `conv2d` wrapper.
    """

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        self.stride, self.padding = as_pair(stride, "stride"), as_pair(padding, "padding")
        self.dilation, self.groups = as_pair(dilation, "dilation"), groups

    def forward(self, x, weight, bias=None):
        xp = get_array_module(x)
        n, c_in, h, w = x.shape
        c_out, c_group, kh, kw = weight.shape
        g = self.groups
        self.x_shape, self.weight = x.shape, weight
        self.out_size = (conv_output_size(h, kh, self.stride[0], self.padding[0], self.dilation[0]),
                         conv_output_size(w, kw, self.stride[1], self.padding[1], self.dilation[1]))
        self.depthwise = g == c_in == c_out
        self.pointwise = (kh, kw) == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        keep = self.needs_input_grad[1]  # only dW reads the input again (as columns)
        if cudnn.active(xp):
            self.x = x if keep else None
            y = cudnn.conv2d(x, weight, self.out_size, self.stride, self.padding, self.dilation, g)
        elif self.depthwise:
            self.x = x if keep else None  # dW gathers the input under the taps again
            if cuda_kernels.active(xp):
                y = cuda_kernels.depthwise_forward(x, weight, self.stride, self.padding,
                                                   self.dilation, self.out_size)
            else:
                geo = depthwise.layout(n, (h, w), (kh, kw), self.stride, self.padding,
                                       self.dilation, self.out_size)
                y = depthwise.correlate(x, weight, geo)               # (N, C, H_out, W_out)
        else:
            col = self._columns(x)                                    # (N, G, K_g, L)
            w_mat = weight.reshape(g, c_out // g, c_group * kh * kw)  # (G, C_out/G, K_g)
            y = xp.matmul(w_mat, col)  # (G, C_out/G, K_g) @ (N, G, K_g, L) -> (N, G, C_out/G, L)
            y = y.reshape((n, c_out) + self.out_size)                 # -> (N, C_out, H_out, W_out)
            self.col = col if keep else None
        if bias is not None:
            y += bias.reshape(1, c_out, 1, 1)                         # (C_out,) -> (1, C_out, 1, 1)
        return y

    def _columns(self, x):
        """x: (N, C_in, H, W) -> col: (N, G, K_g, L), K_g = C_in / G * kH * kW, L = H_out W_out.

        A 1x1 kernel with stride 1 and no padding gathers nothing: x itself is the columns.
        """
        n, c_in = x.shape[:2]
        kh, kw = self.weight.shape[2:]
        g, length = self.groups, self.out_size[0] * self.out_size[1]
        if self.pointwise:
            return x.reshape(n, g, c_in // g, length)  # (N, C_in, H, W) -> (N, G, C_in/G, L)
        # (N, C_in, H, W) -> (N, C_in, kH, kW, H_out, W_out) -> (N, G, K_g, L)
        col = im2col(x, (kh, kw), self.stride, self.padding, self.dilation)
        return col.reshape(n, g, c_in // g * kh * kw, length)

    def backward(self, gy):
        need_gx, need_gw = self.needs_input_grad[:2]
        if cudnn.active(get_array_module(gy)):
            gx, gw = self._cudnn_grads(gy, need_gx, need_gw)
        elif self.depthwise:
            gx, gw = self._depthwise_grads(gy, need_gx, need_gw)
        else:
            gx = self._grad_input(gy) if need_gx else None
            gw = self._grad_weight(gy) if need_gw else None
        if len(self.needs_input_grad) == 2:  # called without a bias
            return gx, gw
        # db = dy summed over images and pixels: (N, C_out, H_out, W_out) -> (C_out,)
        gb = gy.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gw, gb

    def _cudnn_grads(self, gy, need_gx, need_gw):
        """dx and dW by cuDNN (TINYSEG_CUDNN=1 on the GPU)."""
        args = (self.stride, self.padding, self.dilation, self.groups)
        gx = cudnn.conv2d_grad_input(gy, self.weight, self.x_shape, *args) if need_gx else None
        gw = cudnn.conv2d_grad_weight(gy, self.x, self.weight.shape, *args) if need_gw else None
        return gx, gw

    def _depthwise_grads(self, gy, need_gx, need_gw):
        """dx and dW of the depthwise path: CUDA kernels on the GPU, else depthwise.backward."""
        args = (self.stride, self.padding, self.dilation)
        if not cuda_kernels.active(get_array_module(gy)):
            return depthwise.backward(gy, self.weight, self.x_shape, *args,
                                      x=self.x if need_gw else None, need_gx=need_gx)
        gx = gw = None
        if need_gx:
            gx = cuda_kernels.depthwise_grad_input(gy, self.weight, self.x_shape, *args)
        if need_gw:
            gw = cuda_kernels.depthwise_grad_weight(gy, self.x, self.weight.shape[2:], *args)
        return gx, gw

    def _grad_input(self, gy):
        """dx = col2im(dcol) with dcol[n, g] = W[g]^T dy[n, g]."""
        xp = get_array_module(gy)
        n, c_in, h, w = self.x_shape
        c_out, c_group, kh, kw = self.weight.shape
        g = self.groups
        gy_mat = gy.reshape(n, g, c_out // g, -1)      # (N, C_out, H_out, W_out) -> (N, G, C_out/G, L)
        w_mat = self.weight.reshape(g, c_out // g, c_group * kh * kw)  # (G, C_out/G, K_g)
        # (G, K_g, C_out/G) @ (N, G, C_out/G, L) -> (N, G, K_g, L)
        gcol = xp.matmul(w_mat.swapaxes(1, 2), gy_mat)
        if self.pointwise:
            return gcol.reshape(self.x_shape)                   # (N, G, C_in/G, L) -> (N, C_in, H, W)
        gcol = gcol.reshape((n, c_in, kh, kw) + self.out_size)  # -> (N, C_in, kH, kW, H_out, W_out)
        return col2im(gcol, (h, w), self.stride, self.padding, self.dilation)

    def _grad_weight(self, gy):
        """dW[g] = sum_n dy[n, g] col[n, g]^T."""
        xp = get_array_module(gy)
        n, c_out = gy.shape[:2]
        # (N, C_out, H_out, W_out) -> (N, G, C_out/G, L)
        gy_mat = gy.reshape(n, self.groups, c_out // self.groups, -1)
        # (N, G, C_out/G, L) @ (N, G, L, K_g) -> (N, G, C_out/G, K_g), summed over the images;
        # contiguous and laid out like W (the optimizer then walks W, its gradient and its
        # momentum in the same order)
        gw = xp.matmul(gy_mat, self.col.swapaxes(2, 3)).sum(axis=0)
        return gw.reshape(self.weight.shape)                      # (C_out, C_in/G, kH, kW)


def _check_arguments(x, weight, bias, stride, padding, dilation, groups):
    """Raise a one-line error for anything torch.nn.functional.conv2d would refuse."""
    if x.ndim != 4:
        raise ValueError(f"conv2d: input must be (N, C_in, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be (C_out, C_in/groups, kH, kW), "
                         f"got shape {weight.shape}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        dtypes = f"{x.dtype}, {weight.dtype}" + ("" if bias is None else f", {bias.dtype}")
        raise TypeError(f"conv2d: input, weight and bias must share one dtype, got {dtypes}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    (_, c_in, h, w), (c_out, c_group, kh, kw) = x.shape, weight.shape
    if c_in % groups or c_out % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both C_in={c_in} and C_out={c_out}")
    if c_group * groups != c_in:
        raise ValueError(f"conv2d: weight {weight.shape} expects {c_group * groups} input channels "
                         f"(C_in/groups={c_group}, groups={groups}), but the input has {c_in}")
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"conv2d: bias must have shape ({c_out},), got {bias.shape}")
    stride, padding = as_pair(stride, "stride"), as_pair(padding, "padding")
    dilation = as_pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: need stride >= 1, dilation >= 1 and padding >= 0, got "
                         f"stride={stride}, dilation={dilation}, padding={padding}")
    out_h = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        kernel = f"{dilation[0] * (kh - 1) + 1}x{dilation[1] * (kw - 1) + 1}"
        raise ValueError(f"conv2d: output size {out_h}x{out_w} is empty: input {h}x{w} with padding "
                         f"{padding} is smaller than the dilated kernel {kernel}")


def _active_taps(size, kernel, stride, padding, dilation):
    """The kernel taps along one axis that see at least one input pixel, as (first, last + 1),
    and the padding that a conv with only those taps needs for the same output; None when
    every tap is active or the smaller conv would not line up.

    Tap i reads padded positions i d + p s, p = 0 .. out - 1; the real input is at
    [padding, padding + size). A large dilation on a small map (ASPP's rate 18 on a 16 x 16
    map) leaves outer taps that multiply only zeros: dropping them changes no output value.
    """
    out = conv_output_size(size, kernel, stride, padding, dilation)
    active = [i for i in range(kernel)
              if i * dilation + (out - 1) * stride >= padding and i * dilation < padding + size]
    if not active:  # no tap reaches the input: the output is the bias alone; keep it simple
        return None
    first, stop = active[0], active[-1] + 1
    new_padding = padding - first * dilation
    if stop - first == kernel or new_padding < 0 or \
            conv_output_size(size, stop - first, stride, new_padding, dilation) != out:
        return None
    return first, stop, new_padding


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    weight: (C_out, C_in / groups, kH, kW); bias: (C_out,) or None; stride, padding and
    dilation: an int or a pair (height, width). groups = C_in = C_out is a depthwise conv.
    Kernel taps that would read only padding are left out (`_active_taps`): the same result
    with less work; their weights get a zero gradient through the slicing.
    """
    _check_arguments(input, weight, bias, stride, padding, dilation, groups)
    stride, padding = as_pair(stride, "stride"), as_pair(padding, "padding")
    dilation = as_pair(dilation, "dilation")
    kh, kw = weight.shape[2:]
    rows = _active_taps(input.shape[2], kh, stride[0], padding[0], dilation[0])
    cols = _active_taps(input.shape[3], kw, stride[1], padding[1], dilation[1])
    if rows or cols:
        (r0, r1, ph), (c0, c1, pw) = rows or (0, kh, padding[0]), cols or (0, kw, padding[1])
        weight = weight[:, :, r0:r1, c0:c1]  # (C_out, C_in / G, kH', kW'): the active taps
        padding = (ph, pw)
    function = Conv2d(stride, padding, dilation, groups)
    return function(input, weight) if bias is None else function(input, weight, bias)
