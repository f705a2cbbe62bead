"""Max pooling slab by slab: the fast twin of tinyseg/functional/pool.py's MaxPool2d.

The reference's running max makes kH * kW passes over the whole activation; here every pass
of a cache-sized slab of channels runs before the next slab, the slabs spread over the cores
(tinyseg/fast/parallel.py), writing in place; the argmax is kept only for backward.
"""
import numpy as np

from ..backend import get_array_module
from ..functional.conv import pad
from ..functional.pool import MaxPool2d, _pool_geometry, _tap, _unpad
from .parallel import for_each_channel_slab


class SlabMaxPool2d(MaxPool2d):
    """MaxPool2d (same arguments and results), one slab of channels at a time."""

    def forward(self, x):
        xp = get_array_module(x)
        (kh, kw), stride, padding, out_size = _pool_geometry(
            x.shape, self.kernel_size, self.stride, self.padding, "max_pool2d")
        self.geometry = stride, padding, out_size
        self.taps = [(i, j) for i in range(kh) for j in range(kw)]  # row-major, like torch's scan
        self.x_shape, self.dtype = x.shape, x.dtype
        out = xp.empty(x.shape[:2] + out_size, x.dtype)  # (N, C, H_out, W_out)
        # which tap holds each window's max: only backward needs it
        self.argmax = xp.zeros(out.shape, np.int32) if self.needs_input_grad[0] else None

        def pool(c):  # a slab c of the channels (tinyseg/fast/parallel.py)
            padded = pad(x[:, c], padding, -np.inf)  # (N, slab, H + 2 p_h, W + 2 p_w)
            best = out[:, c]
            best[...] = _tap(padded, *self.taps[0], stride, out_size)
            for t, (i, j) in enumerate(self.taps[1:], start=1):
                window = _tap(padded, i, j, stride, out_size)
                if self.argmax is None:
                    xp.maximum(best, window, out=best)  # NaN included
                    continue
                argmax = self.argmax[:, c]
                better = window > best  # strict: an equal value loses the tie
                better |= xp.isnan(window)  # a NaN takes over (torch: the last NaN wins)
                xp.maximum(best, window, out=best)  # the new running max, NaN included
                # t grows along the loop, so "argmax = t where better" is a running max too
                xp.maximum(argmax, better * np.int32(t), out=argmax)
        for_each_channel_slab(pool, x)
        return out

    def backward(self, gy):
        xp = get_array_module(gy)
        stride, padding, out_size = self.geometry
        gx = xp.empty(self.x_shape, self.dtype)  # (N, C, H, W)
        (ph, pw), (h, w) = padding, self.x_shape[2:]

        def route(c):  # a slab c of the channels
            g, argmax = gy[:, c], self.argmax[:, c]
            padded = xp.zeros(g.shape[:2] + (h + 2 * ph, w + 2 * pw), self.dtype)
            for t, (i, j) in enumerate(self.taps):
                view = _tap(padded, i, j, stride, out_size)  # overlapping windows add up here
                view += g * (argmax == t)
            gx[:, c] = _unpad(padded, padding)
        for_each_channel_slab(route, gx)
        return gx
