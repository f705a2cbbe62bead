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

from .. import cuda_kernels
from ..autograd import Function, Tensor, as_tensor
from ..backend import device_of, get_array_module, to_device


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

    With the features as rows, f: (N*h*w, C~), the decode is v = f W^T + mean: (N*h*w, r*r*C).
    Backward, with gv = dL/dv (the output gradient cut back into blocks by space-to-depth):
        dL/df = gv W,    dL/dW = gv^T f,    dL/dmean = sum of gv over all rows.

    Inside, W's rows and mean are taken class-major, (c, i, j), instead of the contract's
    (i, j, c): the same numbers, but then each block's r numbers of one row of one class lie
    side by side in v, and depth-to-space copies runs of r contiguous numbers instead of
    gathering them C apart (3.5x faster at 512 x 512, r = 16, C = 21).
    """

    def __init__(self, ratio):
        self.ratio = ratio

    def forward(self, F, W, mean):
        xp = get_array_module(F)
        n, k, h, w = F.shape
        r = self.ratio
        c = W.shape[0] // (r * r)
        self.F_shape, self.order = F.shape, _class_major(r, c, xp)
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
        g_F, g_W, g_mean = _projection_grads(gv, self.f, self.W, self.F_shape,
                                             self.needs_input_grad)
        return g_F, _unordered(g_W, self.order), _unordered(g_mean, self.order)


def _class_major(r, c, xp):
    """Indices that reorder a block vector from (i, j, c) to (c, i, j): v[order] is class-major."""
    return xp.arange(r * r * c).reshape(r, r, c).transpose(2, 0, 1).ravel()


def _unordered(a, order):
    """The inverse of a[order] along the first axis: rows back in the contract's order (None
    stays None)."""
    if a is None:
        return None
    back = get_array_module(a).empty_like(a)
    back[order] = a
    return back


def _projection_grads(gv, f, W, F_shape, needs):
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


class DUpsampleCrossEntropy(Function):
    """The mean cross-entropy of softmax(DUpsample(F) / T) against labels, Eqs. (5), (6) and the
    loss as ONE op for the GPU: F (N, C~, h, w), W, mean, T (1,), labels (N, H, W) -> ().

    The 1x1 conv v = f W^T is a GEMM; then one CUDA thread per labelled pixel reads its C scores
    straight from v where depth-to-space would take them, and writes its loss and its gradient
    in v's layout (tinyseg/cuda_kernels.py), so the (N, C, h r, w r) scores, their log-softmax
    and its gradient are never stored. H <= h r and W <= w r: the scores are cropped to the
    labels, as the network does. The plain twin, which the tests compare it with, is
    dupsample -> log_softmax_with_temperature -> crop -> nll_loss.
    """

    def __init__(self, ratio, ignore_index, launch):
        self.ratio, self.ignore_index, self.launch = ratio, ignore_index, launch

    def forward(self, F, W, mean, T, labels):
        xp = get_array_module(F)
        n, k, h, w = F.shape
        self.F_shape, self.W, self.T_shape = F.shape, W, T.shape
        self.f = F.transpose(0, 2, 3, 1).reshape(n * h * w, k)  # (N*h*w, C~): a feature per row
        v = self.f @ W.T                                         # (N*h*w, r*r*C)
        losses, self.grad_v, grad_t = cuda_kernels.dupsample_cross_entropy(
            v, mean, T, labels, self.ratio, self.ignore_index, launch=self.launch)
        self.count = (labels != self.ignore_index).sum().astype(F.dtype)  # 0: NaN, as nll_loss
        self.grad_t = grad_t.sum()
        return xp.asarray(losses.sum() / self.count)

    def backward(self, g):
        scale = g / self.count
        g_F, g_W, g_mean = _projection_grads(self.grad_v * scale, self.f, self.W, self.F_shape,
                                             self.needs_input_grad)
        g_T = (self.grad_t * scale).reshape(self.T_shape) if self.needs_input_grad[3] else None
        return g_F, g_W, g_mean, g_T, None


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
    return DUpsample(ratio)(input, W, mean)


def dupsample_cross_entropy(input, W, mean, T, target, ratio, ignore_index=255,
                            launch=cuda_kernels.cupy_launch):
    """nll_loss(log_softmax_with_temperature(dupsample(input, W, mean, ratio), T)[..., :H, :W],
    target) in one op on the GPU (DUpsampleCrossEntropy); target: (N, H, W) labels with
    H <= h r, W <= w r. `launch` runs the kernel (CuPy's by default; tests/cuda_emulator.py's
    on the CPU)."""
    input = as_tensor(input)
    _check_ratio(ratio, "dupsample_cross_entropy")
    _check_4d(input, "dupsample_cross_entropy")
    W, mean, T = _fixed(W, input), _fixed(mean, input), as_tensor(T, like=input)
    target = to_device(target.data if isinstance(target, Tensor) else target,
                       device_of(input.data))
    n, _, h, w = input.shape
    num_classes = W.shape[0] // (ratio * ratio)
    if target.ndim != 3 or target.shape[0] != n or target.shape[1] > h * ratio \
            or target.shape[2] > w * ratio or -(-target.shape[1] // ratio) != h \
            or -(-target.shape[2] // ratio) != w:
        raise ValueError(f"dupsample_cross_entropy: labels of shape {tuple(target.shape)} do not "
                         f"fit features {tuple(input.shape)} at ratio {ratio}")
    labels = target[target != ignore_index]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"dupsample_cross_entropy: labels must be in [0, {num_classes}) or "
                         f"{ignore_index}, got values from {int(labels.min())} to "
                         f"{int(labels.max())}")
    return DUpsampleCrossEntropy(ratio, ignore_index, launch)(input, W, mean, T, target)
