"""Pooling over (N, C, H, W) maps: max, average, and adaptive (e.g. global) average pooling.

Max and average pooling slide a kH x kW window with a stride over the (padded) input. Rather
than looping over output pixels, both loop over the kH * kW kernel TAPS: for tap (i, j) the
strided slice

    x_padded[:, :, i : i + s_h * H_out : s_h,  j : j + s_w * W_out : s_w]      (N, C, H_out, W_out)

holds, for every window at once, the input pixel that the window sees at that tap (the trick
of im2col, without building the column matrix). A window's max or mean is a running max or sum
over the kH * kW slices, and backward scatters the gradient back through the same slices. The
loops touch only whole arrays, so they run unchanged on NumPy and CuPy.

Output size, floor mode as in torch:  H_out = floor((H + 2 p_h - kH) / s_h) + 1.

These are the reference versions; tinyseg/fast/pool.py holds max pooling's twin (slab by slab
of channels, on every core), chosen by tinyseg.config.
"""
import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from ..dispatch import choose
from .conv import as_pair, pad, tap_slices


def _pool_geometry(shape, kernel_size, stride, padding, op):
    """Check a pooling op's arguments for an input shape; return kernel, stride, padding, out size."""
    if len(shape) != 4:
        raise ValueError(f"{op} expects a 4-D input (N, C, H, W), got shape {tuple(shape)}")
    kernel = as_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else as_pair(stride, "stride")
    padding = as_pair(padding, "padding")
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: kernel_size {kernel} and stride {stride} must be positive, "
                         f"padding {padding} non-negative")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} should be at most half of kernel_size {kernel}")
    out_size = tuple((n + 2 * p - k) // s + 1
                     for n, k, s, p in zip(shape[2:], kernel, stride, padding))
    if min(out_size) < 1:
        raise ValueError(f"{op}: input {shape[2]}x{shape[3]} with padding {padding} is smaller "
                         f"than kernel_size {kernel}")
    return kernel, stride, padding, out_size


def _unpad(x, padding):
    """(N, C, H + 2 p_h, W + 2 p_w) -> (N, C, H, W): the inverse crop of `_pad`."""
    ph, pw = padding
    return x[:, :, ph:x.shape[2] - ph, pw:x.shape[3] - pw]


def _tap(padded, i, j, stride, out_size):
    """The (N, C, H_out, W_out) strided view of `padded` that kernel tap (i, j) sees."""
    rows, cols = tap_slices(i, j, out_size, stride, (1, 1))
    return padded[:, :, rows, cols]


class MaxPool2d(Function):
    """x: (N, C, H, W) -> (N, C, H_out, W_out), the max of each window; padding counts as -inf.

    Backward routes each window's gradient to its argmax. Ties go to the first maximum in
    row-major order of the window, as in torch; a NaN in a window makes the output NaN.
    (The routing multiplies dL/dy by a 0/1 mask, so a NaN or inf in dL/dy also turns the
    window's other inputs NaN, where torch leaves them 0; the loss is NaN by then anyway.)
    """

    def __init__(self, kernel_size, stride, padding):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        xp = get_array_module(x)
        (kh, kw), stride, padding, out_size = _pool_geometry(
            x.shape, self.kernel_size, self.stride, self.padding, "max_pool2d")
        self.geometry = stride, padding, out_size
        self.taps = [(i, j) for i in range(kh) for j in range(kw)]  # row-major, like torch's scan
        self.x_shape = x.shape
        padded = pad(x, padding, -np.inf)                     # (N, C, H + 2 p_h, W + 2 p_w)
        best = _tap(padded, *self.taps[0], stride, out_size)  # (N, C, H_out, W_out)
        self.argmax = xp.zeros(best.shape, np.int32)          # which tap holds each window's max
        for t, (i, j) in enumerate(self.taps[1:], start=1):
            window = _tap(padded, i, j, stride, out_size)
            better = (window > best) | xp.isnan(window)       # strict: an equal value loses the tie
            best = xp.where(better, window, best)
            self.argmax = xp.where(better, np.int32(t), self.argmax)
        return best

    def backward(self, gy):
        xp = get_array_module(gy)
        stride, padding, out_size = self.geometry
        (ph, pw), (n, c, h, w) = padding, self.x_shape
        gx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), gy.dtype)
        for t, (i, j) in enumerate(self.taps):
            view = _tap(gx, i, j, stride, out_size)           # overlapping windows add up here
            view += gy * (self.argmax == t)
        return _unpad(gx, padding)


class AvgPool2d(Function):
    """x: (N, C, H, W) -> (N, C, H_out, W_out), the mean of each kH x kW window.

    Zero padding counts in the mean (torch's count_include_pad=True): every window divides by
    kH * kW. Backward spreads gy / (kH * kW) evenly over each window.
    """

    def __init__(self, kernel_size, stride, padding):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        xp = get_array_module(x)
        (kh, kw), stride, padding, out_size = _pool_geometry(
            x.shape, self.kernel_size, self.stride, self.padding, "avg_pool2d")
        self.geometry = (kh, kw), stride, padding, out_size
        padded = pad(x, padding)  # (N, C, H + 2 p_h, W + 2 p_w)
        self.padded_shape = padded.shape
        total = xp.zeros(x.shape[:2] + out_size, x.dtype)  # (N, C, H_out, W_out)
        for i in range(kh):
            for j in range(kw):
                total += _tap(padded, i, j, stride, out_size)
        return total / (kh * kw)

    def backward(self, gy):
        xp = get_array_module(gy)
        (kh, kw), stride, padding, out_size = self.geometry
        share = gy / (kh * kw)  # (N, C, H_out, W_out): what each pixel of a window gets
        gx = xp.zeros(self.padded_shape, gy.dtype)  # (N, C, H + 2 p_h, W + 2 p_w)
        for i in range(kh):
            for j in range(kw):
                view = _tap(gx, i, j, stride, out_size)  # overlapping windows add up here
                view += share
        return _unpad(gx, padding)


def _averaging_matrix(in_size, out_size, dtype, xp):
    """(out_size, in_size) matrix whose row i averages the input cells of adaptive bin i.

    Bin i covers [floor(i * in / out), ceil((i + 1) * in / out)), torch's rule: the bins tile
    the input and overlap by one cell where in_size is not a multiple of out_size.
    """
    matrix = xp.zeros((out_size, in_size), dtype)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-(i + 1) * in_size // out_size)  # ceil division
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPool2d(Function):
    """x: (N, C, H, W) -> (N, C, H_out, W_out), the mean over each of H_out x W_out bins.

    Averaging is linear and separable, so with the averaging matrices A_h (H_out, H) and
    A_w (W_out, W) of `_averaging_matrix`, each map is pooled as  y = A_h x A_w^T  and the
    backward is its transpose,  dx = A_h^T gy A_w.  output_size 1 is global average pooling.
    """

    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        xp = get_array_module(x)
        if x.ndim != 4:
            raise ValueError(f"adaptive_avg_pool2d expects a 4-D input (N, C, H, W), "
                             f"got shape {x.shape}")
        ho, wo = as_pair(self.output_size, "output_size")
        if ho < 1 or wo < 1:
            raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, "
                             f"got {self.output_size!r}")
        self.rows = _averaging_matrix(x.shape[2], ho, x.dtype, xp)  # A_h: (H_out, H)
        self.cols = _averaging_matrix(x.shape[3], wo, x.dtype, xp)  # A_w: (W_out, W)
        # (H_out, H) @ (N, C, H, W) @ (W, W_out) -> (N, C, H_out, W_out)
        return self.rows @ x @ self.cols.T

    def backward(self, gy):
        # (H, H_out) @ (N, C, H_out, W_out) @ (W_out, W) -> (N, C, H, W)
        return self.rows.T @ gy @ self.cols


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """torch.nn.functional.max_pool2d (floor mode); stride defaults to kernel_size."""
    return choose(MaxPool2d, input)(kernel_size, stride, padding)(input)


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """torch.nn.functional.avg_pool2d with count_include_pad=True; stride defaults to kernel_size."""
    return AvgPool2d(kernel_size, stride, padding)(input)


def adaptive_avg_pool2d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool2d; output_size 1 or (1, 1) is global average pooling."""
    return AdaptiveAvgPool2d(output_size)(input)
