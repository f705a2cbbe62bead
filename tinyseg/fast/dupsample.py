"""DUpsampling with class-major blocks: the fast twin of tinyseg/functional/dupsample.py's
DUpsample.

The reference decodes v = W f + mean in the contract's (i, j, c) order and depth-to-space then
gathers each output row's numbers C apart. Taking W's rows in (c, i, j) order instead puts a
block's r numbers of one row of one class side by side, so the rearrangement copies runs of r
contiguous numbers (3.5x faster at 512 x 512, r = 16, C = 21). The gradients of W and mean are
put back in the contract's order.
"""
from ..backend import get_array_module
from ..blocks import class_major_order
from ..functional.dupsample import DUpsample, projection_grads


class ClassMajorDUpsample(DUpsample):
    """DUpsample (same arguments and results), W's rows and mean taken class-major inside."""

    def forward(self, F, W, mean):
        xp = get_array_module(F)
        n, k, h, w = F.shape
        r = self.ratio
        c = W.shape[0] // (r * r)
        self.F_shape, self.order = F.shape, class_major_order(r, c, xp)
        self.W = W[self.order]                                   # rows (c, i, j)
        self.f = F.transpose(0, 2, 3, 1).reshape(n * h * w, k)  # (N*h*w, C~): a feature per row
        v = self.f @ self.W.T                                    # (N*h*w, C*r*r): the 1x1 conv
        v += mean[self.order]
        v = v.reshape(n, h, w, c, r, r)                          # (n, y, x, c, i, j)
        return v.transpose(0, 3, 1, 4, 2, 5).reshape(n, c, h * r, w * r)  # (n, c, y, i, x, j)

    def backward(self, gy):
        n, k, h, w = self.F_shape
        r, c = self.ratio, gy.shape[1]
        gv = gy.reshape(n, c, h, r, w, r)                        # (n, c, y, i, x, j)
        gv = gv.transpose(0, 2, 4, 1, 3, 5)                      # (n, y, x, c, i, j)
        gv = gv.reshape(n * h * w, c * r * r)                    # rows like v
        g_F, g_W, g_mean = projection_grads(gv, self.f, self.W, self.F_shape,
                                            self.needs_input_grad)
        return g_F, _unordered(g_W, self.order), _unordered(g_mean, self.order)


def _unordered(a, order):
    """The inverse of a[order] along the first axis: rows back in the contract's order (None
    stays None)."""
    if a is None:
        return None
    back = get_array_module(a).empty_like(a)
    back[order] = a
    return back
