"""DUpsampling (the paper's Eq. 5) and the depth-to-space rearrangement under it.

dupsample: F (N, C~, h, w) -> (N, C, h*r, w*r)

Every feature vector f in R^C~ (one per low-resolution pixel) is decoded into the r x r x C block
of class scores it stands for,

    v = W f + mean        W: (r*r*C, C~),  mean: (r*r*C,)

(Eq. 2's reconstruction v~ = W x, plus the mean the PCA subtracted before compressing). On the
whole map that is a 1x1 convolution with kernels W, giving (N, r*r*C, h, w), followed by
depth-to-space, which unfolds each pixel's r*r*C numbers into an r x r patch of C channels.

THE ORDERING CONTRACT (shared with tinyseg/pca.py, which fits W and mean):

    a block vector v of length r*r*C is ordered (i, j, c), class fastest:
        v[(i*r + j)*C + c] is class c at row offset i, column offset j inside the block;
    depth_to_space(x, r)[n, c, y*r + i, x*r + j] = x[n, (i*r + j)*C + c, y, x];
    space_to_depth is its exact inverse.

So for one-hot labels Y (N, C, H, W), space_to_depth(Y, r)[n, :, y, x] is the paper's vector v
of the r x r sub-window at rows y*r ... y*r + r - 1 and columns x*r ... x*r + r - 1 (Sec. 3.1):
the vectors PCA is fitted on. With P = W^T for an orthonormal W, dupsample(P (v - mean), W,
mean, r) gives back depth_to_space(v, r) = Y, exactly when W keeps all r*r*C directions.

The three ops take and return Tensors; on raw arrays, read the result's `.data`, e.g.
`space_to_depth(one_hot, r).data`.
"""
import numbers

from ..autograd import Function, Tensor, as_tensor
from ..backend import device_of, get_array_module, to_device
from ..dispatch import choose
from .activation import log_softmax_with_temperature
from .loss import nll_loss


# ---------------------------------------------------------------- raw-array rearrangements
def _depth_to_space(x, r):
    """(N, r*r*C, h, w) -> (N, C, h*r, w*r): channel (i*r + j)*C + c -> offset (i, j), class c."""
    n, depth, h, w = x.shape
    c = depth // (r * r)
    x = x.reshape(n, r, r, c, h, w)          # (n, i, j, c, y, x)
    x = x.transpose(0, 3, 4, 1, 5, 2)        # (n, c, y, i, x, j)
    return x.reshape(n, c, h * r, w * r)     # row y*r + i, column x*r + j


def _space_to_depth(x, r):
    """(N, C, H, W) -> (N, r*r*C, H/r, W/r): the inverse of _depth_to_space."""
    n, c, height, width = x.shape
    h, w = height // r, width // r
    x = x.reshape(n, c, h, r, w, r)          # (n, c, y, i, x, j)
    x = x.transpose(0, 3, 5, 1, 2, 4)        # (n, i, j, c, y, x)
    return x.reshape(n, r * r * c, h, w)     # channel (i*r + j)*C + c


# ---------------------------------------------------------------- Functions
class DepthToSpace(Function):
    """(N, r*r*C, h, w) -> (N, C, h*r, w*r); backward: space-to-depth of the gradient."""

    def __init__(self, ratio):
        self.ratio = ratio

    def forward(self, x):
        return _depth_to_space(x, self.ratio)

    def backward(self, gy):
        return _space_to_depth(gy, self.ratio)


class SpaceToDepth(Function):
    """(N, C, H, W) -> (N, r*r*C, H/r, W/r); backward: depth-to-space of the gradient."""

    def __init__(self, ratio):
        self.ratio = ratio

    def forward(self, x):
        return _space_to_depth(x, self.ratio)

    def backward(self, gy):
        return _depth_to_space(gy, self.ratio)


class DUpsample(Function):
    """out = depth_to_space(W F + mean): F (N, C~, h, w) -> (N, C, h*r, w*r), Eq. (5).

    With the features as rows, f: (N*h*w, C~), the decode is v = f W^T + mean: (N*h*w, r*r*C),
    a 1x1 convolution. Backward, with gv = dL/dv (the output gradient cut back into blocks by
    space-to-depth):
        dL/df = gv W,    dL/dW = gv^T f,    dL/dmean = sum of gv over all rows.
    """

    def __init__(self, ratio):
        self.ratio = ratio

    def forward(self, F, W, mean):
        n, k, h, w = F.shape
        self.F_shape, self.W = F.shape, W
        self.f = F.transpose(0, 2, 3, 1).reshape(n * h * w, k)  # (N*h*w, C~): a feature per row
        v = self.f @ W.T + mean                                  # (N*h*w, r*r*C): the 1x1 conv
        v = v.reshape(n, h, w, -1).transpose(0, 3, 1, 2)         # (N, r*r*C, h, w)
        return _depth_to_space(v, self.ratio)                    # (N, C, h*r, w*r)

    def backward(self, gy):
        n, k, h, w = self.F_shape
        gv = _space_to_depth(gy, self.ratio)                     # (N, r*r*C, h, w)
        gv = gv.transpose(0, 2, 3, 1).reshape(n * h * w, -1)     # rows like v
        return projection_grads(gv, self.f, self.W, self.F_shape, self.needs_input_grad)


def projection_grads(gv, f, W, F_shape, needs):
    """From gv = dL/dv (N*h*w, r*r*C) for v = f W^T + mean: dL/dF (N, C~, h, w), dL/dW, dL/dmean
    (None where needs[i] is False)."""
    n, k, h, w = F_shape
    g_F = g_W = g_mean = None
    if needs[0]:
        g_F = (gv @ W).reshape(n, h, w, k)                       # (N, h, w, C~)
        g_F = g_F.transpose(0, 3, 1, 2)                          # (N, C~, h, w)
    if needs[1]:
        g_W = gv.T @ f                                           # (r*r*C, C~)
    if needs[2]:
        g_mean = gv.sum(axis=0)                                  # (r*r*C,)
    return g_F, g_W, g_mean


# ---------------------------------------------------------------- wrappers
def _check_ratio(ratio, name):
    if not isinstance(ratio, numbers.Integral) or ratio < 1:
        raise ValueError(f"{name}: ratio must be a positive int, got {ratio!r}")


def _check_4d(x, name):
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D input (N, C, H, W), got shape {x.shape}")


def _fixed(array, like):
    """A raw array (e.g. W from the PCA file) as a constant Tensor on like's device and dtype;
    a Tensor is kept as it is, so a trainable W or mean gets its gradient."""
    if isinstance(array, Tensor):
        return array
    return Tensor(to_device(array, device_of(like.data)).astype(like.dtype))


def depth_to_space(x, ratio):
    """(N, r*r*C, h, w) -> (N, C, h*r, w*r), channel (i*r + j)*C + c going to offset (i, j)."""
    x = as_tensor(x)
    _check_ratio(ratio, "depth_to_space")
    _check_4d(x, "depth_to_space")
    if x.shape[1] % (ratio * ratio):
        raise ValueError(f"depth_to_space: {x.shape[1]} channels is not a multiple of "
                         f"ratio**2 = {ratio * ratio}")
    return DepthToSpace(ratio)(x)


def space_to_depth(x, ratio):
    """(N, C, H, W) -> (N, r*r*C, H/r, W/r): each r x r block becomes one (i, j, c) vector."""
    x = as_tensor(x)
    _check_ratio(ratio, "space_to_depth")
    _check_4d(x, "space_to_depth")
    if x.shape[2] % ratio or x.shape[3] % ratio:
        raise ValueError(f"space_to_depth: height and width {x.shape[2:]} must be multiples of "
                         f"ratio = {ratio} (pad the map first)")
    return SpaceToDepth(ratio)(x)


def dupsample(input, W, mean, ratio):
    """DUpsample (Eq. 5): (N, C~, h, w) -> (N, C, h*r, w*r) with out = depth_to_space(W f + mean).

    W: (r*r*C, C~), rows ordered (i, j, c) as in the module text; mean: (r*r*C,) or None (no
    offset). Raw arrays are constants; Tensors that require grad are trained.
    """
    input = as_tensor(input)
    _check_ratio(ratio, "dupsample")
    _check_4d(input, "dupsample")
    W = _fixed(W, input)
    if W.ndim != 2 or W.shape[1] != input.shape[1]:
        raise ValueError(f"dupsample: W must have shape (r*r*C, {input.shape[1]}) for an input "
                         f"with {input.shape[1]} channels, got {W.shape}")
    if W.shape[0] % (ratio * ratio):
        raise ValueError(f"dupsample: W has {W.shape[0]} rows, not a multiple of ratio**2 = "
                         f"{ratio * ratio} (one row per (i, j, class) of an r x r block)")
    if mean is None:
        mean = get_array_module(input.data).zeros(W.shape[0], input.dtype)
    mean = _fixed(mean, input)
    if mean.shape != (W.shape[0],):
        raise ValueError(f"dupsample: mean must have shape ({W.shape[0]},) like W's rows, "
                         f"got {mean.shape}")
    return choose(DUpsample, input)(ratio)(input, W, mean)


def dupsample_cross_entropy(input, W, mean, T, target, ratio, ignore_index=255):
    """The DUpsampling decoder's training loss: the mean cross-entropy of
    softmax(dupsample(input, W, mean, ratio) / T), Eqs. (5) and (6), cropped to the labels,
    against target (N, H, W) with H <= h r, W <= w r (ignore_index: void).

    Here it is the composition of the three ops; on the GPU with the CUDA kernels its twin
    (tinyseg/fast/cuda.py) fuses them, so the (N, C, H, W) scores are never stored.
    """
    input = as_tensor(input)
    fused = choose(dupsample_cross_entropy, input)
    if fused is not dupsample_cross_entropy:
        return fused(input, W, mean, T, target, ratio, ignore_index)
    height, width = target.shape[-2:]
    log_p = log_softmax_with_temperature(dupsample(input, W, mean, ratio), T, dim=1)
    return nll_loss(log_p[:, :, :height, :width], target, ignore_index=ignore_index)
