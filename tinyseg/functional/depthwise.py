"""Depthwise convolution: one kH x kW filter per channel (groups = C_in = C_out), Xception's main op.

    y[n, c, p, q] = sum over taps t = (i, j) of W[c, 0, i, j] x_pad[n, c, p sh + i dh, q sw + j dw]

It has only kH * kW weights per channel, so the dense path's GEMMs would be tiny and its
columns kH * kW times larger than the input. Here each channel is its own small problem:

    y[c] = W[c] @ cols[c]      (1, T) @ (T, N L)         T = kH kW taps, L outputs per image
    dW[c] = cols[c] @ dy[c]    (T, N L) @ (N L, 1)

with cols[c] the input under each tap, gathered for a slab of channels at a time (it stays in
the cache). The forward's products are one einsum over the slab (a matmul would hand each
(1, T) @ (T, N L) product to OpenBLAS's own threads, which then serialise the slab threads);
dW's are one batched matmul (OpenBLAS keeps those T dot products on the calling thread).

The "wide" layout makes each tap's gather ONE strided slice. Store a channel's padded image
row-major as a flat vector with rows of `width` numbers. Tap (i, j) of output pixel (p, q) then
reads flat position

    (p sh + i dh) width + q sw + j dw  =  sw m + offset(i, j),   m = p wide + q,  wide = width sh / sw

(width is a multiple of sw, so `wide` is whole): the SAME shift offset(i, j) = i dh width + j dw
for every output pixel. So the outputs are computed as H_out rows of `wide` numbers; the
columns q >= W_out read past their row's end and are dropped (and get a zero gradient), and
rows of zeros after the image keep every slice inside the array.

dx is a depthwise correlation too, of dy with the flipped kernel (the adjoint of a correlation
with stride s is one with the flipped kernel over dy with s - 1 zeros inserted between its
values; the "transposed convolution" identity): so the backward reuses `correlate`.
Everything runs slab by slab of channels on the CPU's threads (tinyseg/parallel.py).
"""
from collections import namedtuple

from ..backend import get_array_module
from ..parallel import run, slabs

Layout = namedtuple("Layout", "in_size out_size padding rows width wide step offsets")


def _for_each_slab(task, x):
    """task(c) for slabs c of x's channels, each half the usual size (tinyseg/parallel.py): a
    slab's columns are kH kW times its input, and on 2 cores half-size slabs measured fastest
    (Xception's 728 channels at 32 x 32: 12.8 ms forward + backward, 22 ms at full size)."""
    channels = x.shape[1]
    run(task, slabs(channels, 2 * x.nbytes // channels, get_array_module(x)))


def layout(in_size, kernel, stride, padding, dilation, out_size):
    """The wide layout of one correlation; padding is what comes before the image (the zeros
    after it are whatever out_size needs). See the module docstring."""
    (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = in_size, kernel, stride, padding, dilation
    (oh, ow) = out_size
    width = max(pw + w, (ow - 1) * sw + (kw - 1) * dw + 1)  # every column a real output reads
    width = -(-width // sw) * sw          # rounded up to a multiple of the column stride
    wide = width * sh // sw               # outputs computed per output row (>= W_out)
    offsets = [i * dh * width + j * dw for i in range(kh) for j in range(kw)]
    last_read = sw * (oh * wide - 1) + offsets[-1]  # the furthest flat position read
    rows = max(ph + h, last_read // width + 1)
    return Layout(in_size, out_size, padding, rows, width, wide, sw, offsets)


def _columns(x, geo):
    """x: (N, slab, H, W) -> cols: (slab, T, N L), L = H_out wide: the input under every tap."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    (ph, pw), length = geo.padding, geo.out_size[0] * geo.wide
    flat = xp.zeros((c, n, geo.rows * geo.width), x.dtype)   # (slab, N, rows width), padded
    padded = flat.reshape(c, n, geo.rows, geo.width)         # a view: writes reach flat
    padded[:, :, ph:ph + h, pw:pw + w] = x.transpose(1, 0, 2, 3)
    cols = xp.empty((c, len(geo.offsets), n, length), x.dtype)
    for t, offset in enumerate(geo.offsets):
        cols[:, t] = flat[:, :, offset:offset + geo.step * (length - 1) + 1:geo.step]
    return cols.reshape(c, len(geo.offsets), n * length)


def _to_wide(g, geo):
    """g: (N, slab, H_out, W_out) -> (slab, N L, 1) in the wide layout, zero in the junk columns."""
    xp = get_array_module(g)
    n, c, oh, ow = g.shape
    wide = xp.zeros((c, n, oh, geo.wide), g.dtype)
    wide[..., :ow] = g.transpose(1, 0, 2, 3)
    return wide.reshape(c, n * oh * geo.wide, 1)


def correlate(x, weight, geo):
    """x: (N, C, H, W), weight: (C, 1, kH, kW) -> y: (N, C, H_out, W_out) for the layout geo."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    oh, ow = geo.out_size
    y = xp.empty((n, c, oh, ow), x.dtype)

    def convolve(ch):
        cols = _columns(x[:, ch], geo)                       # (slab, T, N L)
        w = weight[ch].reshape(-1, len(geo.offsets))         # (slab, T)
        y_wide = xp.einsum("ct,ctm->cm", w, cols)            # (slab, N L)
        y_wide = y_wide.reshape(-1, n, oh, geo.wide)[..., :ow]  # drop the junk columns
        y[:, ch] = y_wide.transpose(1, 0, 2, 3)              # (N, slab, H_out, W_out)
    _for_each_slab(convolve, x)
    return y


def grad_weight(x, gy, geo):
    """dW[c, 0, i, j] = sum over (n, p, q) of dy[n, c, p, q] x_pad[n, c, p sh + i dh, q sw + j dw]."""
    xp = get_array_module(x)
    c = x.shape[1]
    gw = xp.empty((c, len(geo.offsets), 1), x.dtype)     # (C, T, 1)

    def reduce(ch):
        # (slab, T, N L) @ (slab, N L, 1) -> (slab, T, 1)
        xp.matmul(_columns(x[:, ch], geo), _to_wide(gy[:, ch], geo), out=gw[ch])
    _for_each_slab(reduce, x)
    return gw


def grad_input(gy, weight, x_shape, stride, padding, dilation):
    """dx: (N, C, H, W), as a correlation of dy (zeros inserted for the stride) with the
    flipped kernel; see the module docstring."""
    xp = get_array_module(gy)
    n, c, oh, ow = gy.shape
    kh, kw = weight.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    if (sh, sw) != (1, 1):  # insert s - 1 zeros between the values of dy
        spread = xp.zeros((n, c, (oh - 1) * sh + 1, (ow - 1) * sw + 1), gy.dtype)
        spread[:, :, ::sh, ::sw] = gy
        gy = spread
    # padding before dy: the dilated kernel's reach minus the forward's padding; a negative
    # one means skipping that many values of dy instead
    before = [(k - 1) * d - p for k, d, p in zip((kh, kw), dilation, padding)]
    gy = gy[:, :, max(0, -before[0]):, max(0, -before[1]):]
    geo = layout(gy.shape[2:], (kh, kw), (1, 1), [max(0, b) for b in before], (dh, dw),
                 x_shape[2:])
    return correlate(gy, weight[:, :, ::-1, ::-1], geo)
