"""Convolution, fast: the twin of tinyseg/functional/conv.py's Conv2d (same arguments, same
results up to float rounding), with four speed-ups over the reference:

1. im2col and col2im run on cache-sized slabs of channels spread over the cores
   (tinyseg/fast/parallel.py): each slab is padded and gathered on its own, so the padded slab
   is still in the cache for its kH * kW copies.
2. A 1x1 kernel with stride 1 and no padding gathers nothing: x itself is the columns.
3. A depthwise convolution (groups = C_in = C_out) has only kH * kW weights per channel, so
   GEMMs would be tiny and columns kH * kW times the input: it takes the layout of
   tinyseg/fast/depthwise.py instead, channel slab by channel slab.
4. Kernel taps that would read only padding (ASPP's rate 18 on a 16 x 16 map) are left out:
   the same output with less work; their weights get a zero gradient.

tinyseg/fast/cuda.py subclasses it, swapping the gathers for CUDA kernels.
"""
from ..backend import get_array_module
from ..functional.conv import Conv2d, col2im, conv_output_size, output_size, pad, tap_slices
from . import depthwise
from .parallel import for_each_channel_slab


def im2col_slabs(x, kernel, stride, padding, dilation):
    """functional.conv.im2col, slab by slab of channels: x (N, C, H, W) -> (N, C, kH, kW, H_out, W_out)."""
    xp = get_array_module(x)
    out_size = output_size(x.shape[2:], kernel, stride, padding, dilation)
    col = xp.empty(x.shape[:2] + tuple(kernel) + out_size, dtype=x.dtype)

    def gather(channels):
        padded = pad(x[:, channels], padding)  # (N, slab, Hp, Wp)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                rows, cols = tap_slices(i, j, out_size, stride, dilation)
                col[:, channels, i, j] = padded[:, :, rows, cols]
    for_each_channel_slab(gather, x)
    return col


def col2im_slabs(col, input_size, stride, padding, dilation):
    """functional.conv.col2im, slab by slab of channels: the padded sums stay in the cache."""
    xp = get_array_module(col)
    n, c = col.shape[:2]
    x = xp.empty((n, c) + tuple(input_size), dtype=col.dtype)

    def scatter(channels):
        x[:, channels] = col2im(col[:, channels], input_size, stride, padding, dilation)
    for_each_channel_slab(scatter, x)
    return x


def active_taps(size, kernel, stride, padding, dilation):
    """The kernel taps along one axis that see at least one input pixel, as a slice, and the
    padding that a conv with only those taps needs for the same output; None when every tap
    is active or the smaller conv would not line up.

    Tap i reads padded positions i d + p s, p = 0 .. out - 1; the real input is at
    [padding, padding + size).
    """
    out = conv_output_size(size, kernel, stride, padding, dilation)
    active = [i for i in range(kernel)
              if i * dilation + (out - 1) * stride >= padding and i * dilation < padding + size]
    if not active:  # no tap reaches the input: the output is the bias alone; keep them all
        return None
    first, stop = active[0], active[-1] + 1
    new_padding = padding - first * dilation
    if stop - first == kernel or new_padding < 0 or \
            conv_output_size(size, stop - first, stride, new_padding, dilation) != out:
        return None
    return slice(first, stop), new_padding


class SlabConv2d(Conv2d):
    """Conv2d (same arguments and results) with the speed-ups of the module text."""

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        super().__init__(stride, padding, dilation, groups)
        self.given_padding = self.padding  # self.padding: the padding of the taps kept

    def forward(self, x, weight, bias=None):
        xp = get_array_module(x)
        self.full_weight_shape, self.taps = weight.shape, (slice(None), slice(None))
        self.padding = self.given_padding
        trims = [active_taps(*args) for args in zip(x.shape[2:], weight.shape[2:], self.stride,
                                                     self.padding, self.dilation)]
        if any(trims):
            self.taps = tuple(t[0] if t else slice(None) for t in trims)
            self.padding = tuple(t[1] if t else p for t, p in zip(trims, self.padding))
            weight = weight[(slice(None), slice(None)) + self.taps]  # only the active taps
        n, c_in, h, w = x.shape
        c_out, c_group, kh, kw = weight.shape
        g = self.groups
        self.x_shape, self.weight = x.shape, weight
        self.out_size = output_size((h, w), (kh, kw), self.stride, self.padding, self.dilation)
        self.depthwise = g == c_in == c_out
        self.pointwise = (kh, kw) == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        keep = self.needs_input_grad[1]  # only dW reads the input again
        if self.depthwise:
            self.x = x if keep else None
            y = self.depthwise_forward(x, weight)                       # (N, C, H_out, W_out)
        else:
            col = self.columns(x)                                       # (N, G, K_g, L)
            w_mat = weight.reshape(g, c_out // g, c_group * kh * kw)    # (G, C_out/G, K_g)
            y = xp.matmul(w_mat, col).reshape((n, c_out) + self.out_size)
            self.col = col if keep else None
        if bias is not None:
            y += bias.reshape(1, c_out, 1, 1)
        return y

    def columns(self, x):
        """x: (N, C_in, H, W) -> col: (N, G, K_g, L); x itself for a pointwise kernel."""
        n, c_in = x.shape[:2]
        g, length = self.groups, self.out_size[0] * self.out_size[1]
        if self.pointwise:
            return x.reshape(n, g, c_in // g, length)
        col = self.im2col(x, self.weight.shape[2:])
        return col.reshape(n, g, -1, length)

    def im2col(self, x, kernel):
        return im2col_slabs(x, kernel, self.stride, self.padding, self.dilation)

    def col2im(self, gcol):
        return col2im_slabs(gcol, self.x_shape[2:], self.stride, self.padding, self.dilation)

    def depthwise_forward(self, x, weight):
        geo = depthwise.layout(x.shape[0], x.shape[2:], weight.shape[2:], self.stride,
                               self.padding, self.dilation, self.out_size)
        return depthwise.correlate(x, weight, geo)

    def depthwise_grads(self, gy, need_gx, need_gw):
        return depthwise.backward(gy, self.weight, self.x_shape, self.stride, self.padding,
                                  self.dilation, x=self.x if need_gw else None, need_gx=need_gx)

    def backward(self, gy):
        xp = get_array_module(gy)
        need_gx, need_gw = self.needs_input_grad[:2]
        if self.depthwise:
            gx, gw = self.depthwise_grads(gy, need_gx, need_gw)
        else:
            n, c_in = self.x_shape[:2]
            c_out, c_group, kh, kw = self.weight.shape
            g = self.groups
            gy_mat = gy.reshape(n, g, c_out // g, -1)                   # (N, G, C_out/G, L)
            w_mat = self.weight.reshape(g, c_out // g, c_group * kh * kw)
            gx = gw = None
            if need_gx:
                gcol = xp.matmul(w_mat.swapaxes(1, 2), gy_mat)          # (N, G, K_g, L)
                gx = gcol.reshape(self.x_shape) if self.pointwise else \
                    self.col2im(gcol.reshape((n, c_in, kh, kw) + self.out_size))
            if need_gw:  # contiguous, laid out like W (the optimizer walks them together)
                gw = xp.matmul(gy_mat, self.col.swapaxes(2, 3)).sum(axis=0).reshape(self.weight.shape)
        if gw is not None and gw.shape != self.full_weight_shape:  # the taps left out: 0
            full = xp.zeros(self.full_weight_shape, gw.dtype)
            full[(slice(None), slice(None)) + self.taps] = gw
            gw = full
        gb = gy.sum(axis=(0, 2, 3)) if len(self.needs_input_grad) == 3 and self.needs_input_grad[2] else None
        return (gx, gw, gb)[:len(self.needs_input_grad)]
