"""ReLU chunk by chunk: the fast twin of tinyseg/functional/activation.py's ReLU.

Both passes run over the flat arrays in cache-sized chunks spread over the cores
(tinyseg/fast/parallel.py), writing into preallocated outputs; the mask is kept only when
backward will need it.
"""
from ..backend import get_array_module
from ..functional.activation import ReLU
from .parallel import for_each_chunk


class ChunkedReLU(ReLU):
    """ReLU (same results), on every core."""

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.empty(x.shape, x.dtype)
        # the mask (x > 0) is kept only for backward
        self.mask = xp.empty(x.shape, bool) if self.needs_input_grad[0] else None
        x_flat, y_flat = x.reshape(-1), y.reshape(-1)

        def rectify(k):  # a chunk k of the flat arrays
            if self.mask is not None:
                xp.greater(x_flat[k], 0, out=self.mask.reshape(-1)[k])
            xp.maximum(x_flat[k], 0, out=y_flat[k])
        for_each_chunk(rectify, x)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.empty(gy.shape, gy.dtype)
        gy_flat, gx_flat, mask_flat = gy.reshape(-1), gx.reshape(-1), self.mask.reshape(-1)

        def route(k):  # a chunk k of the flat arrays
            xp.multiply(gy_flat[k], mask_flat[k], out=gx_flat[k])
        for_each_chunk(route, gy)
        return gx
