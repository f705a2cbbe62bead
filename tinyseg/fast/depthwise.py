"""Depthwise convolution: one kH x kW filter per channel (groups = C_in = C_out), Xception's main op.

    y[n, c, p, q] = sum over taps t = (i, j) of W[c, 0, i, j] x_pad[n, c, p sh + i dh, q sw + j dw]

It has only kH * kW weights per channel, so the dense path's GEMMs would be tiny and its
columns kH * kW times larger than the input. Here each channel is its own small problem, and
the work is memory traffic: the layout below lets every tap read its inputs as a strided view
of kW shifted copies of the padded channel, so nothing kH kW times larger than the input is
written (9x columns for a 3 x 3 kernel; 3 copies here).

The "wide" layout. Stack a channel's N padded images vertically into one tall image, `rows`
rows per image, and store it row-major as a flat vector with rows of `width` numbers. Tap (i, j)
of output pixel (p, q) of image n then reads flat position

    (n rows + p sh + i dh) width + q sw + j dw  =  sw m + i dh width + j dw,
    m = (n rows / sh + p) wide + q,   wide = width sh / sw

(rows is a multiple of sh and width of sw, so everything is whole): the SAME shift for every
output. So the outputs are computed as rows / sh rows of `wide` numbers per image, m = 0 .. M-1;
the columns q >= W_out and the rows p >= H_out read zeros or a neighbour's pixels and are
dropped (and get a zero gradient). With kW copies of the flat vector, copy j shifted by j dw,
tap (i, j) of output m is

    shifted[j, sw m + i dh width]      a view (kH, kW, M) with strides (dh width, copy, sw)

and the forward is one einsum per slab of channels, y[c, m] = sum_ij W[c, i, j] taps[c, i, j, m].
(A batched matmul would hand its small products to OpenBLAS, whose calls from the two slab
threads measured no faster than from one; an einsum runs on its own thread.)

dx is a depthwise correlation too, of dy with the flipped kernel (the adjoint of a correlation
with stride s is one with the flipped kernel over dy with s - 1 zeros inserted between its
values; the "transposed convolution" identity). The taps of that correlation also give dW
(see `backward`), so the backward reads dy under the taps once and the input not at all.
Everything runs slab by slab of channels on the CPU's threads (tinyseg/fast/parallel.py).
"""
from collections import namedtuple

from ..backend import as_strided, get_array_module
from .parallel import run, slabs

Layout = namedtuple("Layout", "in_size out_size kernel stride padding dilation rows width wide "
                              "outputs length")


def _for_each_slab(task, x):
    """task(c) for slabs c of x's channels, each half the usual size (tinyseg/fast/parallel.py):
    a slab's shifted copies are kW times its input."""
    channels = x.shape[1]
    run(task, slabs(channels, 2 * x.nbytes // channels, get_array_module(x)))


def layout(batch, in_size, kernel, stride, padding, dilation, out_size):
    """The wide layout of one correlation of `batch` images; padding is what comes before each
    image (the zeros after it are whatever out_size needs). See the module docstring."""
    (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = in_size, kernel, stride, padding, dilation
    (oh, ow) = out_size
    width = max(pw + w, (ow - 1) * sw + (kw - 1) * dw + 1)  # every column a real output reads
    width = -(-width // sw) * sw          # rounded up to a multiple of the column stride
    rows = max(ph + h, (oh - 1) * sh + (kh - 1) * dh + 1)   # every row a real output reads
    rows = -(-rows // sh) * sh            # rounded up to a multiple of the row stride
    wide = width * sh // sw               # outputs computed per output row (>= W_out)
    outputs = batch * rows // sh * wide   # M: rows / sh output rows per image
    length = sw * (outputs - 1) + (kh - 1) * dh * width + 1  # of each shifted copy
    return Layout(in_size, out_size, (kh, kw), (sh, sw), (ph, pw), (dh, dw), rows, width, wide,
                  outputs, length)


def _taps(x, geo):
    """x: (N, slab, H, W) -> taps: (slab, kH, kW, M), a view: tap (i, j) of every output m."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    (ph, pw), (kh, kw), (dh, dw) = geo.padding, geo.kernel, geo.dilation
    size = max(n * geo.rows * geo.width, geo.length + (kw - 1) * dw)
    shifted = xp.empty((c, kw, size), x.dtype)  # copy j: the stacked padded images shifted by j dw
    shifted[:, 0] = 0
    images = shifted[:, 0, :n * geo.rows * geo.width].reshape(c, n, geo.rows, geo.width)
    images[:, :, ph:ph + h, pw:pw + w] = x.transpose(1, 0, 2, 3)  # a view: writes reach copy 0
    for j in range(1, kw):  # (taps read only the first geo.length numbers of each copy)
        shifted[:, j, :geo.length] = shifted[:, 0, j * dw:j * dw + geo.length]
    s_channel, s_copy, s_item = shifted.strides               # in bytes
    return as_strided(shifted, (c, kh, kw, geo.outputs),
                      (s_channel, dh * geo.width * s_item, s_copy, geo.stride[1] * s_item))


def _to_wide(a, geo):
    """a: (N, slab, H_out, W_out) -> (slab, M) in the wide layout, zero in the dropped outputs."""
    xp = get_array_module(a)
    n, c, oh, ow = a.shape
    wide = xp.zeros((c, n, geo.rows // geo.stride[0], geo.wide), a.dtype)
    wide[:, :, :oh, :ow] = a.transpose(1, 0, 2, 3)
    return wide.reshape(c, geo.outputs)


def _weighted_sum(weight, taps, geo):
    """(slab, kH, kW) weights on (slab, kH, kW, M) taps -> (N, slab, H_out, W_out), a view."""
    xp = get_array_module(taps)
    oh, ow = geo.out_size
    y_wide = xp.einsum("cij,cijm->cm", weight, taps)             # (slab, M)
    y_wide = y_wide.reshape(y_wide.shape[0], -1, geo.rows // geo.stride[0], geo.wide)
    return y_wide[:, :, :oh, :ow].transpose(1, 0, 2, 3)         # drop the junk outputs


def correlate(x, weight, geo):
    """x: (N, C, H, W), weight: (C, 1, kH, kW) -> y: (N, C, H_out, W_out) for the layout geo."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    y = xp.empty((n, c) + tuple(geo.out_size), x.dtype)
    weight = weight[:, 0]                                        # (C, kH, kW)

    def convolve(ch):
        y[:, ch] = _weighted_sum(weight[ch], _taps(x[:, ch], geo), geo)
    _for_each_slab(convolve, x)
    return y


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
    geo = layout(n, gy.shape[2:], kernel, (1, 1), [max(0, b) for b in before], dilation, in_size)
    return gy, geo


def backward(gy, weight, x_shape, stride, padding, dilation, x=None, need_gx=True):
    """dx: (N, C, H, W) and dW: (C, 1, kH, kW) of y = correlate(x, W), from ONE set of taps of dy.

    dx is a correlation of dy (zeros inserted for the stride) with the flipped kernel, see the
    module docstring. Its taps hold, for every input pixel u and tap t of the flipped kernel,
    the dy value that tap reads; and that is exactly the dy value whose output read x[u]
    through tap flip(t) in the forward. So the same taps give both gradients:

        dx[u] = sum over t of W_flipped[t] dytaps[t, u]
        dW[flip(t)] = sum over u of x[u] dytaps[t, u]       (the zero padding of x adds nothing)

    x (the forward's input) is needed for dW only: x=None returns no dW; need_gx=False no dx.
    """
    xp = get_array_module(gy)
    n, c = gy.shape[:2]
    kh, kw = weight.shape[2:]
    gy, geo = _flipped_layout(gy, (kh, kw), stride, padding, dilation, x_shape[2:])
    flipped = weight[:, 0, ::-1, ::-1]                          # (C, kH, kW)
    gx = xp.empty((n, c) + tuple(geo.out_size), gy.dtype) if need_gx else None
    gw_flipped = xp.empty((c, kh, kw), gy.dtype) if x is not None else None

    def differentiate(ch):
        taps = _taps(gy[:, ch], geo)                            # (slab, kH, kW, M)
        if need_gx:
            gx[:, ch] = _weighted_sum(flipped[ch], taps, geo)
        if x is not None:
            gw_flipped[ch] = xp.einsum("cijm,cm->cij", taps, _to_wide(x[:, ch], geo))
    _for_each_slab(differentiate, gy)
    if x is None:
        return gx, None
    gw = gw_flipped.reshape(c, 1, kh, kw)[:, :, ::-1, ::-1]
    return gx, xp.ascontiguousarray(gw)  # laid out like W, for the optimizer's chunks
