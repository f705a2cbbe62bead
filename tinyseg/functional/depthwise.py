"""Depthwise convolution: one kH x kW filter per channel (groups = C_in = C_out), Xception's main op.

    y[n, c, p, q] = sum over taps t = (i, j) of W[c, 0, i, j] x_pad[n, c, p sh + i dh, q sw + j dw]

It has only kH * kW weights per channel, so the dense path's GEMMs would be tiny and its
columns kH * kW times larger than the input. Here each channel is its own small problem:

    y[c] = W[c] @ cols[c]      (1, T) @ (T, N L)         T = kH kW taps, L outputs per image

with cols[c] the input under each tap, gathered for a slab of channels at a time (it stays in
the cache). The products are one einsum over the slab (a matmul would hand each
(1, T) @ (T, N L) product to OpenBLAS's own threads, which then serialise the slab threads).

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
values; the "transposed convolution" identity). The columns of that correlation also give dW
(see `backward`), so the backward gathers dy once and the input not at all.
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


def _to_wide(a, geo):
    """a: (N, slab, H_out, W_out) -> (slab, N L, 1) in the wide layout, zero in the junk columns."""
    xp = get_array_module(a)
    n, c, oh, ow = a.shape
    wide = xp.zeros((c, n, oh, geo.wide), a.dtype)
    wide[..., :ow] = a.transpose(1, 0, 2, 3)
    return wide.reshape(c, n * oh * geo.wide, 1)


def _weighted_sum(weight, cols, geo, n):
    """(slab, T) weights on (slab, T, N L) columns -> (N, slab, H_out, W_out)."""
    xp = get_array_module(cols)
    oh, ow = geo.out_size
    y_wide = xp.einsum("ct,ctm->cm", weight, cols)           # (slab, N L)
    y_wide = y_wide.reshape(-1, n, oh, geo.wide)[..., :ow]   # drop the junk columns
    return y_wide.transpose(1, 0, 2, 3)


def _flipped_layout(gy, kernel, stride, padding, dilation, in_size):
    """dy with s - 1 zeros inserted between its values (stride s), and the layout of its
    correlation with the flipped kernel, whose output is dx: (N, C, H, W) with (H, W) = in_size."""
    xp = get_array_module(gy)
    n, c, oh, ow = gy.shape
    (sh, sw) = stride
    if (sh, sw) != (1, 1):
        spread = xp.zeros((n, c, (oh - 1) * sh + 1, (ow - 1) * sw + 1), gy.dtype)
        spread[:, :, ::sh, ::sw] = gy
        gy = spread
    # padding before dy: the dilated kernel's reach minus the forward's padding; a negative
    # one means skipping that many values of dy instead
    before = [(k - 1) * d - p for k, d, p in zip(kernel, dilation, padding)]
    gy = gy[:, :, max(0, -before[0]):, max(0, -before[1]):]
    geo = layout(gy.shape[2:], kernel, (1, 1), [max(0, b) for b in before], dilation, in_size)
    return gy, geo


def correlate(x, weight, geo):
    """x: (N, C, H, W), weight: (C, 1, kH, kW) -> y: (N, C, H_out, W_out) for the layout geo."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    y = xp.empty((n, c) + tuple(geo.out_size), x.dtype)
    taps = weight.reshape(c, len(geo.offsets))                # (C, T)

    def convolve(ch):
        y[:, ch] = _weighted_sum(taps[ch], _columns(x[:, ch], geo), geo, n)
    _for_each_slab(convolve, x)
    return y


def backward(gy, weight, x_shape, stride, padding, dilation, x=None, need_gx=True):
    """dx: (N, C, H, W) and dW: (C, 1, kH, kW) of y = correlate(x, W), from ONE gathering of dy.

    dx is a correlation of dy (zeros inserted for the stride) with the flipped kernel, see the
    module docstring. Its columns hold, for every input pixel u and tap t of the flipped
    kernel, the dy value that tap reads; and that is exactly the dy value whose output read
    x[u] through tap t' = flip(t) in the forward. So the same columns give both gradients:

        dx[u] = sum over t of W_flipped[t] dycols[t, u]
        dW[flip(t)] = sum over u of x[u] dycols[t, u]       (the zero padding of x adds nothing)

    x (the forward's input) is needed for dW only: x=None returns no dW; need_gx=False no dx.
    """
    xp = get_array_module(gy)
    n, c = gy.shape[:2]
    kh, kw = weight.shape[2:]
    need_gw = x is not None
    gy, geo = _flipped_layout(gy, (kh, kw), stride, padding, dilation, x_shape[2:])
    flipped = weight[:, :, ::-1, ::-1].reshape(c, kh * kw)   # (C, T)
    gx = xp.empty((n, c) + tuple(geo.out_size), gy.dtype) if need_gx else None
    gw_flipped = xp.empty((c, kh * kw, 1), gy.dtype) if need_gw else None

    def differentiate(ch):
        cols = _columns(gy[:, ch], geo)                         # (slab, T, N L)
        if need_gx:
            gx[:, ch] = _weighted_sum(flipped[ch], cols, geo, n)
        if need_gw:  # (slab, T, N L) @ (slab, N L, 1) -> (slab, T, 1)
            xp.matmul(cols, _to_wide(x[:, ch], geo), out=gw_flipped[ch])
    _for_each_slab(differentiate, gy)
    if not need_gw:
        return gx, None
    gw = gw_flipped.reshape(c, 1, kh, kw)[:, :, ::-1, ::-1]
    return gx, xp.ascontiguousarray(gw)  # laid out like W, for the optimizer's chunks
