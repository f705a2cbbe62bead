"""cross_entropy, nll_loss, mse_loss: gradients, torch conformance with ignored pixels, errors."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor
from tinyseg.backend import to_numpy
from tinyseg.gradcheck import gradcheck

SHAPE = (2, 3, 5, 7)  # N, C, H, W: odd, non-square
IGNORE = 255


def assert_close(actual, expected, tol=1e-5):
    """Max abs error relative to the largest reference value (elementwise rtol breaks near 0)."""
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error <= tol, f"relative error {error:.3g} > {tol:.1g}"


def labels(rng, shape=(SHAPE[0],) + SHAPE[2:], classes=SHAPE[1], ignored=0.3):
    """Random class labels with about `ignored` of the pixels set to IGNORE."""
    target = rng.integers(0, classes, shape)
    target[rng.random(shape) < ignored] = IGNORE
    return target


# ---------------------------------------------------------------- gradients (float64)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_cross_entropy(xp, rng, reduction):
    x, target = xp.asarray(rng.standard_normal(SHAPE) * 2), xp.asarray(labels(rng))
    assert (to_numpy(target) == IGNORE).any()
    gradcheck(lambda x, t: F.cross_entropy(x, t, reduction=reduction), [x, target])


def test_gradcheck_cross_entropy_rows(xp, rng):
    """(N, C) scores with (N,) labels, as for image classification."""
    x = xp.asarray(rng.standard_normal((7, 4)))
    target = xp.asarray(labels(rng, (7,), classes=4))
    gradcheck(lambda x, t: F.cross_entropy(x, t), [x, target])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_nll_of_temperature_log_softmax(xp, rng, reduction):
    """The paper's Eq. (6) loss: nll(log_softmax(z / T)), differentiated for z and for T."""
    x, target = xp.asarray(rng.standard_normal(SHAPE)), xp.asarray(labels(rng))
    gradcheck(lambda x, t, T: F.nll_loss(F.log_softmax_with_temperature(x, T), t,
                                         reduction=reduction), [x, target, xp.asarray([1.7])])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_mse(xp, rng, reduction):
    x, y = (xp.asarray(rng.standard_normal((2, 3, 5, 7))) for _ in range(2))
    gradcheck(lambda x, y: F.mse_loss(x, y, reduction=reduction), [x, y])


# ---------------------------------------------------------------- conformance with torch (float32)
def ours_and_torch(xp, name, x, target, gy, **kwargs):
    """(our loss, our dx, torch's loss, torch's dx) for the loss function `name`."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    loss_ref = getattr(torch.nn.functional, name)(tx, torch.tensor(target), **kwargs)
    loss_ref.backward(torch.tensor(gy))
    tensor = Tensor(xp.asarray(x), requires_grad=True)
    loss = getattr(F, name)(tensor, xp.asarray(target), **kwargs)
    loss.backward(xp.asarray(gy))
    return loss, tensor.grad, loss_ref.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(xp, rng, reduction):
    x, target = (rng.standard_normal(SHAPE) * 3).astype(np.float32), labels(rng)
    gy = np.float32(0.7) if reduction != "none" else rng.standard_normal(target.shape)
    loss, gx, loss_ref, gx_ref = ours_and_torch(
        xp, "cross_entropy", x, target, np.asarray(gy, np.float32),
        ignore_index=IGNORE, reduction=reduction)
    assert loss.dtype == np.float32
    assert_close(loss.data, loss_ref)
    assert_close(gx, gx_ref)
    assert (to_numpy(gx).transpose(0, 2, 3, 1)[target == IGNORE] == 0).all()


def test_nll_loss_matches_torch(xp, rng):
    log_p = np.log(rng.dirichlet(np.ones(4), (3, 5, 7)))         # (3, 5, 7, 4)
    log_p = np.ascontiguousarray(log_p.transpose(0, 3, 1, 2))  # (3, 4, 5, 7)
    target = labels(rng, (3, 5, 7), classes=4)
    loss, gx, loss_ref, gx_ref = ours_and_torch(
        xp, "nll_loss", log_p.astype(np.float32), target, np.float32(1.3), ignore_index=IGNORE)
    assert_close(loss.data, loss_ref)
    assert_close(gx, gx_ref)


def test_mse_matches_torch(xp, rng):
    x, y = (rng.standard_normal((2, 3, 5, 7)).astype(np.float32) for _ in range(2))
    loss, gx, loss_ref, gx_ref = ours_and_torch(xp, "mse_loss", x, y, np.float32(1.0))
    assert_close(loss.data, loss_ref)
    assert_close(gx, gx_ref)


def test_cross_entropy_by_hand(xp):
    """Two pixels, the second ignored: the mean is the first pixel's -log softmax alone."""
    x = xp.asarray([[[[2.0, 5.0]], [[0.0, 1.0]]]])  # (N=1, C=2, H=1, W=2)
    target = xp.asarray([[[1, IGNORE]]])
    expected = -np.log(np.exp(0.0) / (np.exp(2.0) + np.exp(0.0)))
    np.testing.assert_allclose(float(F.cross_entropy(x, target).data), expected, rtol=1e-12)


def test_all_ignored_gives_nan_and_zero_gradient_like_torch(xp):
    x = Tensor(xp.ones(SHAPE), requires_grad=True)
    loss = F.cross_entropy(x, xp.full((2, 5, 7), IGNORE))
    loss.backward()
    assert np.isnan(float(loss.data))
    assert (to_numpy(x.grad) == 0).all()


def test_target_may_be_a_tensor_or_uint8(xp, rng):
    """Labels as a Tensor, or as uint8 as VOC masks are stored, give the same loss."""
    x, target = xp.asarray(rng.standard_normal(SHAPE)), labels(rng)
    expected = float(F.cross_entropy(x, xp.asarray(target)).data)
    for same in (Tensor(xp.asarray(target)), xp.asarray(target.astype(np.uint8))):
        np.testing.assert_allclose(float(F.cross_entropy(x, same).data), expected, rtol=1e-12)


# ---------------------------------------------------------------- errors
def test_bad_target_values_are_named(xp, rng):
    x, target = xp.asarray(rng.standard_normal(SHAPE)), labels(rng)
    target[0, 0, 0], target[1, 2, 3] = 3, -1  # C = 3: class 3 does not exist; -1 is not ignored
    with pytest.raises(ValueError, match=r"\[-1, 3\] outside the classes \[0, 3\)"):
        F.cross_entropy(x, xp.asarray(target))
    with pytest.raises(ValueError, match="outside the classes"):
        F.nll_loss(x, xp.asarray(target))


@pytest.mark.parametrize("target_shape", [(2, 5), (2, 7, 5), (1, 5, 7)])
def test_wrong_target_shape(xp, target_shape):
    with pytest.raises(ValueError, match=r"expected \(2, 5, 7\)"):
        F.cross_entropy(xp.zeros(SHAPE), xp.zeros(target_shape, dtype=np.int64))


def test_float_target_is_refused(xp):
    with pytest.raises(ValueError, match="integer class indices"):
        F.cross_entropy(xp.zeros(SHAPE), xp.zeros((2, 5, 7)))


def test_bad_reduction_and_mse_shapes(xp):
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(xp.zeros(SHAPE), xp.zeros((2, 5, 7), dtype=np.int64), reduction="avg")
    with pytest.raises(ValueError, match="must match"):
        F.mse_loss(xp.zeros((2, 3)), xp.zeros((3, 2)))
