"""batch_norm: gradients against finite differences, values and running statistics against torch."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor, no_grad
from tinyseg.backend import to_numpy
from tinyseg.gradcheck import gradcheck

SHAPE = (3, 4, 5, 7)  # odd, non-square; M = 3 * 5 * 7 = 105 values per channel


def assert_close(actual, expected, tol=1e-5):
    """Max abs error relative to the largest reference value (elementwise rtol breaks near 0)."""
    actual, expected = to_numpy(actual), to_numpy(expected)  # either may be a device array
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error <= tol, f"relative error {error:.3g} > {tol:.1g}"


def random_params(rng, channels):
    gamma = rng.uniform(0.5, 1.5, channels)
    beta = rng.standard_normal(channels)
    return gamma, beta


# ---------------------------------------------------------------- gradients (float64)
def test_gradcheck_training(xp, rng):
    x = xp.asarray(rng.standard_normal(SHAPE) * 2 + 1)
    gamma, beta = (xp.asarray(a) for a in random_params(rng, SHAPE[1]))
    gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, gamma, beta])


def test_gradcheck_eval(xp, rng):
    x = xp.asarray(rng.standard_normal(SHAPE))
    gamma, beta = (xp.asarray(a) for a in random_params(rng, SHAPE[1]))
    mean = xp.asarray(rng.standard_normal(SHAPE[1]))
    var = xp.asarray(rng.uniform(0.5, 2.0, SHAPE[1]))
    gradcheck(lambda x, w, b: F.batch_norm(x, mean, var, w, b, training=False), [x, gamma, beta])


def test_gradcheck_training_without_affine(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 3, 3, 2)))
    gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_fused_relu(xp, rng, training):
    x = xp.asarray(rng.standard_normal(SHAPE) * 2 + 1)
    gamma, beta = (xp.asarray(a) for a in random_params(rng, SHAPE[1]))
    mean = xp.asarray(rng.standard_normal(SHAPE[1]))
    var = xp.asarray(rng.uniform(0.5, 2.0, SHAPE[1]))
    stats = (None, None) if training else (mean, var)
    gradcheck(lambda x, w, b: F.batch_norm(x, *stats, w, b, training=training, relu=True),
              [x, gamma, beta])


@pytest.mark.parametrize("training", [True, False])
def test_fused_relu_is_relu_of_batch_norm(xp, rng, training):
    """relu=True gives relu(batch_norm(x)), its three gradients and running statistics, with
    and without a backward (no mask kept then)."""
    x0 = rng.standard_normal(SHAPE) + 0.5
    gy = xp.asarray(rng.standard_normal(SHAPE))
    gamma, beta = random_params(rng, SHAPE[1])
    results = []
    for fused in (False, True):
        mean, var = xp.zeros(SHAPE[1]), xp.ones(SHAPE[1])
        x, w, b = (Tensor(xp.asarray(a), requires_grad=True) for a in (x0, gamma, beta))
        y = F.batch_norm(x, mean, var, w, b, training=training, relu=fused)
        y = y if fused else F.relu(y)
        y.backward(gy)
        with no_grad():
            y_no_grad = F.batch_norm(xp.asarray(x0), xp.zeros(SHAPE[1]), xp.ones(SHAPE[1]),
                                     xp.asarray(gamma), xp.asarray(beta), training=training,
                                     relu=True)
        assert_close(y_no_grad.data, y.data, tol=1e-12)
        results.append([y.data, x.grad, w.grad, b.grad, mean, var])
    assert (to_numpy(results[1][0]) >= 0).all() and (to_numpy(results[1][0]) == 0).any()
    for plain, fused in zip(*results):
        assert_close(fused, to_numpy(plain), tol=1e-12)


# ---------------------------------------------------------------- conformance with torch (float32)
def torch_batch_norm(x, mean, var, gamma, beta, gy, training):
    """torch's output, dx, dgamma, dbeta, and its running statistics after the call."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    tmean, tvar = torch.tensor(mean), torch.tensor(var)
    y = torch.nn.functional.batch_norm(tx, tmean, tvar, tw, tb, training=training,
                                       momentum=0.1, eps=1e-5)
    y.backward(torch.tensor(gy))
    return [t.detach().numpy() for t in (y, tx.grad, tw.grad, tb.grad, tmean, tvar)]


@pytest.mark.parametrize("training", [True, False])
def test_matches_torch(xp, rng, training):
    """Forward, all three gradients and (in training) the running statistics, over 3 steps."""
    channels = SHAPE[1]
    gamma, beta = (a.astype(np.float32) for a in random_params(rng, channels))
    ref_mean = rng.standard_normal(channels).astype(np.float32)
    ref_var = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    mean, var = xp.asarray(ref_mean), xp.asarray(ref_var)
    for step in range(3):  # a different batch, with a different offset and scale, each step
        x = (rng.standard_normal(SHAPE) * (step + 1) + 3 * step).astype(np.float32)
        gy = rng.standard_normal(SHAPE).astype(np.float32)
        y_ref, gx_ref, gw_ref, gb_ref, ref_mean, ref_var = torch_batch_norm(
            x, ref_mean, ref_var, gamma, beta, gy, training)

        tx = Tensor(xp.asarray(x), requires_grad=True)
        tw = Tensor(xp.asarray(gamma), requires_grad=True)
        tb = Tensor(xp.asarray(beta), requires_grad=True)
        y = F.batch_norm(tx, mean, var, tw, tb, training=training, momentum=0.1, eps=1e-5)
        y.backward(xp.asarray(gy))

        assert y.dtype == np.float32 and tx.grad.dtype == np.float32
        assert_close(y.data, y_ref)
        assert_close(tx.grad, gx_ref)
        assert_close(tw.grad, gw_ref)
        assert_close(tb.grad, gb_ref)
        assert_close(mean, ref_mean)
        assert_close(var, ref_var)
        assert mean.dtype == np.float32 and var.dtype == np.float32


def test_running_stats_updated_in_place_and_only_in_training(xp, rng):
    x = xp.asarray(rng.standard_normal(SHAPE) + 5, dtype=xp.float32)
    mean, var = xp.zeros(SHAPE[1], xp.float32), xp.ones(SHAPE[1], xp.float32)
    mean_id = id(mean)
    F.batch_norm(x, mean, var, training=False)
    assert float(xp.abs(mean).max()) == 0 and float(xp.abs(var - 1).max()) == 0
    with no_grad():  # running statistics are updated even without a graph, as in torch
        F.batch_norm(x, mean, var, training=True, momentum=0.5)
    batch_mean = x.mean(axis=(0, 2, 3))
    unbiased_var = x.var(axis=(0, 2, 3), ddof=1)
    assert id(mean) == mean_id
    assert_close(mean, to_numpy(0.5 * batch_mean))
    assert_close(var, to_numpy(0.5 * unbiased_var + 0.5))


def test_large_offset_float32_is_accurate(xp, rng):
    """|mean| >> std: the two-pass variance keeps float32 close to a float64 reference."""
    x64 = rng.standard_normal((4, 2, 16, 16)) * 0.01 + 1000.0
    y = F.batch_norm(xp.asarray(x64, dtype=xp.float32), None, None, training=True, eps=0.0)
    centered = x64 - x64.mean(axis=(0, 2, 3), keepdims=True)
    expected = centered / np.sqrt((centered ** 2).mean(axis=(0, 2, 3), keepdims=True))
    assert_close(y.data, expected, tol=2e-3)  # float32 can hold 1000.01 only to ~6e-5


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_rejects_non_4d(xp, shape):
    with pytest.raises(ValueError, match="4-D"):
        F.batch_norm(xp.zeros(shape, xp.float32), None, None, training=True)


def test_rejects_wrong_channel_counts(xp):
    x = xp.zeros((2, 3, 4, 4), xp.float32)
    with pytest.raises(ValueError, match="running_mean.*expected \\(3,\\)"):
        F.batch_norm(x, xp.zeros(4, xp.float32), xp.ones(3, xp.float32))
    with pytest.raises(ValueError, match="weight.*expected \\(3,\\)"):
        F.batch_norm(x, None, None, Tensor(xp.ones(2, xp.float32)), training=True)
    with pytest.raises(ValueError, match="both running_mean and running_var"):
        F.batch_norm(x, xp.zeros(3, xp.float32), None, training=True)
    with pytest.raises(ValueError, match="eval mode"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(TypeError, match="raw array"):
        F.batch_norm(x, Tensor(xp.zeros(3, xp.float32)), Tensor(xp.ones(3, xp.float32)))


def test_rejects_one_value_per_channel_in_training(xp):
    x = xp.zeros((1, 3, 1, 1), xp.float32)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(x, xp.zeros(3, xp.float32), xp.ones(3, xp.float32), training=True)
    y = F.batch_norm(x, xp.zeros(3, xp.float32), xp.ones(3, xp.float32), training=False)
    assert y.shape == (1, 3, 1, 1)  # eval mode is fine with a single value
