"""Resizing feature maps: bilinear (and nearest) interpolation, written as two small matrices.

x: (N, C, H_in, W_in) -> (N, C, H_out, W_out)

Bilinear interpolation is separable: every output row is a weighted mix of (at most) two input
rows, and every output column a mix of two input columns. So it is two matrix products,

    y = A_h @ x @ A_w^T        A_h: (H_out, H_in),  A_w: (W_out, W_in),

where row o of A_h holds the two weights (1 - l, l) at the input rows i0 and i1 that output row
o falls between. The backward pass is the same two products with the matrices transposed:

    dL/dx = A_h^T @ dL/dy @ A_w.

Where an output row lands (PyTorch's coordinate rules, copied exactly):

* align_corners=True: the corner pixels of input and output are aligned,
  src = o * (in - 1) / (out - 1)   (src = 0 when out == 1).
* align_corners=False: pixels are unit squares and their centres are aligned,
  src = (o + 0.5) * scale - 0.5, clamped at 0, where scale = in / out, or 1 / scale_factor
  when a scale_factor was given (as torch does; then out = floor(in * scale_factor)).
* i0 = floor(src) (at most in - 1), i1 = min(i0 + 1, in - 1), l = src - i0.
* When out == in the map is copied unchanged, whatever the scale_factor.

Like torch's bilinear mode, downsampling does NOT antialias: each output pixel still reads only
its two nearest input rows and columns. The paper's flexible aggregation (Sec. 3.3) downsamples
low-level features this way before fusing them.

mode="nearest" follows torch's "nearest": src = min(floor(o * scale), in - 1), computed in
float32 as torch does, so label maps resized here match torch's pixel for pixel. Its matrices
hold a single 1 per row, so the forward pass simply gathers (it works on integer label maps
too); the backward pass uses the same transposed-matrix products as bilinear. (One corner
where torch disagrees with itself: given a scale_factor for which out == in or out == 2 * in,
torch's scalar CPU kernel copies, or takes o // 2, while its vectorized kernel, used for wider
maps, applies the formula. We always apply the formula; with size= the two agree.)

The matrices are small tables (H_out x H_in and W_out x W_in): they are built on the host with
NumPy in float64, then cast to the input's dtype and moved to its device, once per call.
torch computes the source coordinates in float32 for float32 maps, so float32 results agree
with torch to about 1e-6 relative (up to ~1e-5 on maps hundreds of pixels wide); in float64
the two agree to rounding error.
"""
import math

import numpy as np

from ..autograd import Function, as_tensor
from ..backend import get_array_module


def _linear_matrix(in_size, out_size, scale_factor, align_corners, xp, dtype):
    """(out_size, in_size) matrix of bilinear weights along one axis; each row sums to 1."""
    if out_size == in_size:
        return xp.eye(out_size, dtype=dtype)
    o = np.arange(out_size, dtype=np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = o * scale
    else:
        scale = 1.0 / scale_factor if scale_factor else in_size / out_size
        src = np.maximum((o + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = np.clip(src - i0, 0.0, 1.0)  # weight of i1; 1 - lam is the weight of i0
    columns = np.arange(in_size)
    # i0 == i1 at the last input pixel: the two terms then add up to weight 1 on it
    matrix = ((1.0 - lam)[:, None] * (columns == i0[:, None])
              + lam[:, None] * (columns == i1[:, None]))  # (out_size, in_size)
    return xp.asarray(matrix, dtype=dtype)


def _nearest_index(in_size, out_size, scale_factor):
    """Which input pixel each output pixel copies along one axis (torch's float32 arithmetic)."""
    if scale_factor:
        scale = np.float32(1.0 / scale_factor)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def _one_hot_matrix(index, in_size, xp, dtype):
    """(len(index), in_size) matrix with a 1 at (o, index[o]): nearest's interpolation matrix."""
    return xp.asarray(index[:, None] == np.arange(in_size), dtype=dtype)


def _rows_and_columns(x, a_h, a_w):
    """a_h @ x[n, c] @ a_w^T for every map: (N, C, H, W) -> (N, C, a_h rows, a_w rows).

    Written as two plain 2-D matrix products (one BLAS call each) rather than a broadcast
    `a_h @ x @ a_w.T`, which NumPy runs as N*C small products, several times slower. Between
    the two products the data must be transposed (copied); the order is chosen so that the
    copies touch the smaller of input and output.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    h_out, w_out = a_h.shape[0], a_w.shape[0]
    if h_out * w_out >= h * w:  # growing: rows first, and the last product lands in place
        y = x.transpose(2, 0, 1, 3).reshape(h, n * c * w)        # (H, N*C, W) -> (H, N*C*W)
        y = a_h @ y                                              # rows: (H_out, N*C*W)
        y = y.reshape(h_out, n * c, w).transpose(1, 0, 2)        # (N*C, H_out, W)
        y = y.reshape(n * c * h_out, w) @ a_w.T                  # columns: (N*C*H_out, W_out)
        return y.reshape(n, c, h_out, w_out)
    # shrinking: columns first, reading the big input as it lies in memory
    y = x.reshape(n * c * h, w) @ a_w.T                          # columns: (N*C*H, W_out)
    y = y.reshape(n * c, h, w_out).transpose(1, 0, 2)            # (H, N*C, W_out)
    y = a_h @ y.reshape(h, n * c * w_out)                        # rows: (H_out, N*C*W_out)
    y = y.reshape(h_out, n, c, w_out).transpose(1, 2, 0, 3)      # (N, C, H_out, W_out)
    return xp.ascontiguousarray(y)


class Interpolate(Function):
    """y = A_h @ x @ A_w^T for x: (N, C, H_in, W_in) -> (N, C, H_out, W_out); see the module text.

    Backward: dL/dx = A_h^T @ dL/dy @ A_w (the transposed matrices spread each output
    gradient back onto the input pixels it was read from).
    """

    def __init__(self, size, scale_factor, mode, align_corners):
        self.size = size                  # (H_out, W_out)
        self.scale_factor = scale_factor  # (s_h, s_w), or (None, None) when size was given
        self.mode = mode
        self.align_corners = align_corners

    def _matrices(self, xp, dtype):
        """A_h: (H_out, H_in) and A_w: (W_out, W_in)."""
        if self.mode == "nearest":
            return (_one_hot_matrix(self.rows, self.in_size[0], xp, dtype),
                    _one_hot_matrix(self.columns, self.in_size[1], xp, dtype))
        return tuple(_linear_matrix(n_in, n_out, s, self.align_corners, xp, dtype)
                     for n_in, n_out, s in zip(self.in_size, self.size, self.scale_factor))

    def forward(self, x):
        xp = get_array_module(x)
        self.in_size = x.shape[2:]
        if self.mode == "nearest":
            self.rows, self.columns = (
                _nearest_index(n_in, n_out, s)
                for n_in, n_out, s in zip(self.in_size, self.size, self.scale_factor))
            rows, columns = xp.asarray(self.rows), xp.asarray(self.columns)
            return x[:, :, rows][:, :, :, columns]  # (N, C, H_out, W_out)
        a_h, a_w = self._matrices(xp, x.dtype)
        return _rows_and_columns(x, a_h, a_w)       # A_h @ x @ A_w^T

    def backward(self, gy):
        xp = get_array_module(gy)
        a_h, a_w = self._matrices(xp, gy.dtype)
        return _rows_and_columns(gy, a_h.T, a_w.T)  # A_h^T @ gy @ A_w


def _two(value, name):
    """An int/float or a pair of them as a 2-tuple (one per spatial axis)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"interpolate: {name} needs 2 values (H, W) for a 4-D input, "
                             f"got {tuple(value)}")
        return tuple(value)
    return (value, value)


def interpolate(input, size=None, scale_factor=None, mode="bilinear", align_corners=False):
    """Resize (N, C, H, W) -> (N, C, H_out, W_out), like torch.nn.functional.interpolate.

    size: int or (H_out, W_out); or scale_factor: float or (s_h, s_w), giving
    H_out = floor(H * s_h) and using 1 / s_h in the coordinate map (torch's default,
    recompute_scale_factor=None). mode: "bilinear" or "nearest". align_corners: bilinear only.
    """
    input = as_tensor(input)
    if input.ndim != 4:
        raise ValueError(f"interpolate expects a 4-D input (N, C, H, W), got shape {input.shape}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"interpolate: mode must be 'bilinear' or 'nearest', got {mode!r}")
    if mode == "bilinear" and input.dtype.kind != "f":
        raise ValueError(f"interpolate: mode='bilinear' needs a floating-point input, got "
                         f"{input.dtype}; resize label maps with mode='nearest'")
    if mode == "nearest" and align_corners:
        raise ValueError("interpolate: align_corners=True is only defined for mode='bilinear'")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    in_size = input.shape[2:]
    if size is not None:
        out_size = tuple(int(n) for n in _two(size, "size"))
        scales = (None, None)
    else:
        scales = tuple(float(s) for s in _two(scale_factor, "scale_factor"))
        if min(scales) <= 0:
            raise ValueError(f"interpolate: scale_factor must be positive, got {scale_factor}")
        out_size = tuple(math.floor(n * s) for n, s in zip(in_size, scales))
    if min(out_size) <= 0 or min(in_size) <= 0:
        raise ValueError(f"interpolate: input size {tuple(in_size)} and output size "
                         f"{out_size} must both be positive")
    return Interpolate(out_size, scales, mode, align_corners)(input)
