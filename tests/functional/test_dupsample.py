"""dupsample (Eq. 5), depth_to_space and space_to_depth: loops, gradients, exact reconstruction."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor
from tinyseg.backend import to_numpy
from tinyseg.gradcheck import gradcheck

N, C_TILDE, h, w = 2, 3, 3, 4   # low-resolution features, non-square
CLASSES, R = 5, 2                # W: (R * R * CLASSES, C_TILDE) = (20, 3)


def naive_dupsample(F_, W, mean, r):
    """out[n, c, y*r + i, x*r + j] = sum_k W[(i*r + j)*C + c, k] F[n, k, y, x] + mean[...]."""
    n_, _, h_, w_ = F_.shape
    classes = W.shape[0] // (r * r)
    out = np.zeros((n_, classes, h_ * r, w_ * r))
    for n in range(n_):
        for y in range(h_):
            for x in range(w_):
                for i in range(r):
                    for j in range(r):
                        for c in range(classes):
                            row = (i * r + j) * classes + c
                            out[n, c, y * r + i, x * r + j] = W[row] @ F_[n, :, y, x] + mean[row]
    return out


def random_inputs(rng):
    features = rng.standard_normal((N, C_TILDE, h, w))
    W = rng.standard_normal((R * R * CLASSES, C_TILDE))
    mean = rng.standard_normal(R * R * CLASSES)
    return features, W, mean


# ---------------------------------------------------------------- values
def test_dupsample_matches_loops(xp, rng):
    features, W, mean = random_inputs(rng)
    out = F.dupsample(xp.asarray(features), xp.asarray(W), xp.asarray(mean), R)
    assert out.shape == (N, CLASSES, h * R, w * R)
    np.testing.assert_allclose(to_numpy(out.data), naive_dupsample(features, W, mean, R),
                               rtol=1e-12, atol=1e-12)


def test_dupsample_ratio_three_and_no_mean(xp, rng):
    features = rng.standard_normal((1, 4, 2, 3))
    W = rng.standard_normal((3 * 3 * 2, 4))
    out = F.dupsample(xp.asarray(features), W, None, 3)  # W as a NumPy constant, no offset
    np.testing.assert_allclose(to_numpy(out.data),
                               naive_dupsample(features, W, np.zeros(18), 3), rtol=1e-12)


def test_depth_to_space_matches_loops_and_inverts(xp, rng):
    x = rng.standard_normal((2, R * R * CLASSES, h, w))
    y = to_numpy(F.depth_to_space(xp.asarray(x), R).data)
    for i in range(R):
        for j in range(R):
            for c in range(CLASSES):
                np.testing.assert_array_equal(y[:, c, i::R, j::R], x[:, (i * R + j) * CLASSES + c])
    back = F.space_to_depth(xp.asarray(y), R).data
    np.testing.assert_array_equal(to_numpy(back), x)


def test_depth_to_space_is_pixel_shuffle_with_class_fastest(xp, rng):
    """torch's pixel_shuffle orders channels (c, i, j); ours is (i, j, c): same op after a
    channel permutation."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, R * R * CLASSES, h, w))
    ours = to_numpy(F.depth_to_space(xp.asarray(x), R).data)
    x_cij = x.reshape(2, R * R, CLASSES, h, w).transpose(0, 2, 1, 3, 4)  # (n, c, i*r + j, h, w)
    ref = torch.nn.functional.pixel_shuffle(torch.tensor(x_cij.reshape(2, -1, h, w)), R)
    np.testing.assert_array_equal(ours, ref.numpy())


def test_orthonormal_W_recovers_one_hot_labels_exactly(xp, rng):
    """Compress one-hot labels with P = W^T and decode with dupsample: with a full-rank
    orthonormal W (C~ = r*r*C) the labels come back exactly (Sec. 3.1, Eqs. 2 and 5)."""
    height, width = h * R, w * R
    label = rng.integers(0, CLASSES, (N, height, width))
    one_hot = (label[:, None] == np.arange(CLASSES)[None, :, None, None]).astype(np.float64)
    v = to_numpy(F.space_to_depth(xp.asarray(one_hot), R).data)   # (N, r*r*C, h, w)
    mean = v.mean(axis=(0, 2, 3))                                   # (r*r*C,)
    W, _ = np.linalg.qr(rng.standard_normal((R * R * CLASSES,) * 2))  # orthonormal, full rank
    x = np.einsum("dk,ndyx->nkyx", W, v - mean[:, None, None])     # x = P (v - mean), P = W^T
    decoded = to_numpy(F.dupsample(xp.asarray(x), W, mean, R).data)
    np.testing.assert_allclose(decoded, one_hot, atol=1e-12)
    np.testing.assert_array_equal(decoded.argmax(axis=1), label)


# ---------------------------------------------------------------- gradients (float64)
def test_gradcheck_dupsample_all_inputs(xp, rng):
    """Features, a trainable W and a trainable mean all get their gradients."""
    gradcheck(lambda f, W, m: F.dupsample(f, W, m, R), [xp.asarray(a) for a in random_inputs(rng)])


def test_gradcheck_dupsample_fixed_W(xp, rng):
    features, W, mean = random_inputs(rng)
    gradcheck(lambda f: F.dupsample(f, W, mean, R), [xp.asarray(features)])


def test_fixed_W_gets_no_gradient_but_a_trainable_one_does(xp, rng):
    features, W, mean = random_inputs(rng)
    fixed = Tensor(xp.asarray(W))
    trained = Tensor(xp.asarray(W), requires_grad=True)
    F.dupsample(xp.asarray(features), fixed, mean, R).sum().backward()
    F.dupsample(xp.asarray(features), trained, mean, R).sum().backward()
    assert fixed.grad is None and trained.grad.shape == W.shape


def test_gradcheck_depth_to_space_and_back(xp, rng):
    gradcheck(lambda x: F.depth_to_space(x, 3), [xp.asarray(rng.standard_normal((1, 18, 2, 3)))])
    gradcheck(lambda x: F.space_to_depth(x, 3), [xp.asarray(rng.standard_normal((1, 2, 6, 9)))])


# ---------------------------------------------------------------- errors
def test_ratio_must_match_W_rows(xp):
    with pytest.raises(ValueError, match=r"W has 20 rows, not a multiple of ratio\*\*2 = 9"):
        F.dupsample(xp.zeros((N, C_TILDE, h, w)), xp.zeros((20, C_TILDE)), xp.zeros(20), 3)


@pytest.mark.parametrize("W_shape, mean_shape, message", [
    ((20, 4), (20,), r"W must have shape \(r\*r\*C, 3\)"),
    ((20,), (20,), r"W must have shape"),
    ((20, 3), (16,), r"mean must have shape \(20,\)"),
])
def test_dupsample_shape_errors(xp, W_shape, mean_shape, message):
    with pytest.raises(ValueError, match=message):
        F.dupsample(xp.zeros((N, C_TILDE, h, w)), xp.zeros(W_shape), xp.zeros(mean_shape), R)


def test_rearrangement_errors(xp):
    with pytest.raises(ValueError, match="multiples of ratio = 2"):
        F.space_to_depth(xp.zeros((1, 3, 5, 4)), 2)
    with pytest.raises(ValueError, match="not a multiple of ratio"):
        F.depth_to_space(xp.zeros((1, 6, 2, 2)), 2)
    with pytest.raises(ValueError, match="positive int"):
        F.dupsample(xp.zeros((N, C_TILDE, h, w)), xp.zeros((20, C_TILDE)), None, 0)
    with pytest.raises(ValueError, match="4-D"):
        F.dupsample(xp.zeros((C_TILDE, h, w)), xp.zeros((20, C_TILDE)), None, R)
