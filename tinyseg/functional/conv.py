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
(`tap_slices`), as in Chainer's utils/conv.py. With groups, the channels split into G
independent convolutions, done together as one batched matmul over a group axis; a depthwise
convolution (Xception's main op) is the case groups = C_in = C_out.

This is the reference version. tinyseg/fast/conv.py is its faster twin (cache-sized slabs on
every core, a depthwise layout of its own, CUDA kernels on the GPU), chosen by tinyseg.config.
"""
import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from ..dispatch import choose


def as_pair(value, name):
    """An int or a pair of ints as a pair (height, width); shared by the conv and pooling ops."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size, kernel, stride, padding, dilation):
    """Output length along one axis: floor((size + 2 pad - dilation (kernel - 1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_size(in_size, kernel, stride, padding, dilation):
    """(H_out, W_out) of a convolution of an (H, W) map; every argument a pair."""
    return tuple(conv_output_size(*args) for args in zip(in_size, kernel, stride, padding, dilation))


def pad(x, padding, value=0):
    """x: (N, C, H, W) -> (N, C, H + 2 ph, W + 2 pw), `value` around (x itself when padding is 0)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def tap_slices(i, j, out_size, stride, dilation):
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
    """
    xp = get_array_module(x)
    kernel, stride = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride")
    padding, dilation = as_pair(padding, "padding"), as_pair(dilation, "dilation")
    out_size = output_size(x.shape[2:], kernel, stride, padding, dilation)
    padded = pad(x, padding)
    col = xp.empty(x.shape[:2] + kernel + out_size, dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = tap_slices(i, j, out_size, stride, dilation)
            col[:, :, i, j] = padded[:, :, rows, cols]
    return col


def col2im(col, input_size, stride=1, padding=0, dilation=1):
    """The adjoint of im2col: add every column entry back onto the pixel it came from.

    col: (N, C, kH, kW, H_out, W_out) -> (N, C, H, W) with input_size = (H, W). Pixels seen by
    several taps sum their entries (this is what makes it the gradient of im2col).
    """
    xp = get_array_module(col)
    n, c, kh, kw, oh, ow = col.shape
    (h, w), stride = input_size, as_pair(stride, "stride")
    (ph, pw), dilation = as_pair(padding, "padding"), as_pair(dilation, "dilation")
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = tap_slices(i, j, (oh, ow), stride, dilation)
            padded[:, :, rows, cols] += col[:, :, i, j]
    return padded[:, :, ph:ph + h, pw:pw + w]


# ---------------------------------------------------------------- the op
class Conv2d(Function):
    """y = conv2d(x, W) + b.  x: (N, C_in, H, W), W: (C_out, C_in / G, kH, kW), b: (C_out,)
    -> y: (N, C_out, H_out, W_out), with H_out = floor((H + 2 ph - dh (kH - 1) - 1) / sh) + 1.

    Group g of image n: y[n, g] = W[g] @ col[n, g], all of them in one batched matmul.
    Arguments are checked by the `conv2d` wrapper.
    """

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        self.stride, self.padding = as_pair(stride, "stride"), as_pair(padding, "padding")
        self.dilation, self.groups = as_pair(dilation, "dilation"), groups

    def forward(self, x, weight, bias=None):
        xp = get_array_module(x)
        n, c_in = x.shape[:2]
        c_out, c_group, kh, kw = weight.shape
        g = self.groups
        self.x_shape, self.weight = x.shape, weight
        col = im2col(x, (kh, kw), self.stride, self.padding, self.dilation)  # (N, C_in, kH, kW, H_out, W_out)
        self.out_size = col.shape[4:]
        self.col = col.reshape(n, g, c_group * kh * kw, -1)    # (N, G, K_g, L), K_g = C_in / G kH kW
        w_mat = weight.reshape(g, c_out // g, c_group * kh * kw)  # (G, C_out/G, K_g)
        y = xp.matmul(w_mat, self.col)                          # (N, G, C_out/G, L)
        y = y.reshape((n, c_out) + self.out_size)               # (N, C_out, H_out, W_out)
        if bias is not None:
            y += bias.reshape(1, c_out, 1, 1)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        n, c_in, h, w = self.x_shape
        c_out, c_group, kh, kw = self.weight.shape
        g = self.groups
        gy_mat = gy.reshape(n, g, c_out // g, -1)                # (N, G, C_out/G, L)
        w_mat = self.weight.reshape(g, c_out // g, c_group * kh * kw)
        gcol = xp.matmul(w_mat.swapaxes(1, 2), gy_mat)          # dcol = W^T dy: (N, G, K_g, L)
        gcol = gcol.reshape((n, c_in, kh, kw) + self.out_size)
        gx = col2im(gcol, (h, w), self.stride, self.padding, self.dilation)
        gw = xp.matmul(gy_mat, self.col.swapaxes(2, 3)).sum(axis=0)  # dW = sum_n dy col^T
        gb = gy.sum(axis=(0, 2, 3))                              # db: (C_out,)
        return (gx, gw.reshape(self.weight.shape), gb)[:len(self.needs_input_grad)]


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


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    weight: (C_out, C_in / groups, kH, kW); bias: (C_out,) or None; stride, padding and
    dilation: an int or a pair (height, width). groups = C_in = C_out is a depthwise conv.
    """
    _check_arguments(input, weight, bias, stride, padding, dilation, groups)
    function = choose(Conv2d, input)(stride, padding, dilation, groups)
    return function(input, weight) if bias is None else function(input, weight, bias)
