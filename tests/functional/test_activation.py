"""relu, softmax, log_softmax and the temperature softmax (Eq. 6): gradients, torch conformance."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor
from tinyseg.backend import to_numpy
from tinyseg.gradcheck import gradcheck

SHAPE = (2, 3, 5, 7)  # odd, non-square


def assert_close(actual, expected, tol=1e-5):
    """Max abs error relative to the largest reference value (elementwise rtol breaks near 0)."""
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error <= tol, f"relative error {error:.3g} > {tol:.1g}"


def logits(rng, shape=SHAPE, spread=2.0):
    return rng.standard_normal(shape) * spread


# ---------------------------------------------------------------- relu
def test_relu_values_and_gradient(xp, rng):
    x = rng.standard_normal(SHAPE)
    x += np.sign(x) * 0.1  # keep every element away from the kink at 0
    np.testing.assert_array_equal(to_numpy(F.relu(xp.asarray(x)).data), np.maximum(x, 0))
    gradcheck(F.relu, [xp.asarray(x)])


def test_relu6_values_and_gradient(xp, rng):
    x = rng.standard_normal(SHAPE) * 5
    x[np.abs(x) < 0.1] += 0.3       # away from the kinks at 0 and 6
    x[np.abs(x - 6) < 0.1] += 0.3
    np.testing.assert_array_equal(to_numpy(F.relu6(xp.asarray(x)).data), np.clip(x, 0, 6))
    assert (x > 6).any() and (x < 0).any()  # both clips are exercised
    gradcheck(F.relu6, [xp.asarray(x)])


def test_relu6_matches_torch(xp, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(SHAPE).astype(np.float32) * 5
    g = rng.standard_normal(SHAPE).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.relu6(t).backward(torch.tensor(g))
    tensor = Tensor(xp.asarray(x), requires_grad=True)
    F.relu6(tensor).backward(xp.asarray(g))
    assert_close(tensor.grad, t.grad.numpy(), tol=0)


# ---------------------------------------------------------------- gradients (float64)
@pytest.mark.parametrize("op", [F.softmax, F.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [1, -1])
def test_gradcheck_softmax(xp, rng, op, dim):
    gradcheck(lambda z: op(z, dim), [xp.asarray(logits(rng))])


@pytest.mark.parametrize("op", [F.softmax_with_temperature, F.log_softmax_with_temperature],
                         ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("T", [0.7, 2.3])
@pytest.mark.parametrize("T_shape", [(1,), ()], ids=["shape(1,)", "scalar"])
def test_gradcheck_temperature(xp, rng, op, T, T_shape):
    """Both inputs are checked: z, and the temperature T whose gradient sums over everything."""
    z = xp.asarray(logits(rng))
    gradcheck(lambda z, t: op(z, t, dim=1), [z, xp.full(T_shape, T)])


def test_gradcheck_temperature_last_dim(xp, rng):
    z = xp.asarray(logits(rng, (3, 5, 7)))
    gradcheck(lambda z, t: F.softmax_with_temperature(z, t, dim=-1), [z, xp.asarray([1.6])])


def test_temperature_gradient_is_not_zero(xp, rng):
    """With a sum-of-log-probabilities loss dL/dT is non-zero (a ones-gradient check could miss)."""
    t = Tensor(xp.asarray([1.3]), requires_grad=True)
    z = xp.asarray(logits(rng))
    F.log_softmax_with_temperature(z, t)[:, 0].sum().backward()
    assert abs(float(to_numpy(t.grad)[0])) > 1e-3


# ---------------------------------------------------------------- conformance with torch (float32)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [1, -1])
def test_softmax_matches_torch(xp, rng, name, dim):
    torch = pytest.importorskip("torch")
    z = logits(rng).astype(np.float32)
    gy = rng.standard_normal(SHAPE).astype(np.float32)
    tz = torch.tensor(z, requires_grad=True)
    y_ref = getattr(torch.nn.functional, name)(tz, dim=dim)
    y_ref.backward(torch.tensor(gy))

    tensor = Tensor(xp.asarray(z), requires_grad=True)
    y = getattr(F, name)(tensor, dim)
    y.backward(xp.asarray(gy))
    assert y.dtype == np.float32
    assert_close(y.data, y_ref.detach().numpy())
    assert_close(tensor.grad, tz.grad.numpy())


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("T", [0.7, 2.3])
def test_temperature_matches_torch_autograd(xp, rng, name, T):
    """Our explicit backward vs torch differentiating softmax(z / T) for both z and T."""
    torch = pytest.importorskip("torch")
    z = logits(rng).astype(np.float32)
    gy = rng.standard_normal(SHAPE).astype(np.float32)
    tz = torch.tensor(z, requires_grad=True)
    tT = torch.tensor([T], dtype=torch.float32, requires_grad=True)
    y_ref = getattr(torch.nn.functional, name)(tz / tT, dim=1)
    y_ref.backward(torch.tensor(gy))

    tensor = Tensor(xp.asarray(z), requires_grad=True)
    temperature = Tensor(xp.asarray([T], dtype=np.float32), requires_grad=True)
    y = getattr(F, name + "_with_temperature")(tensor, temperature, dim=1)
    y.backward(xp.asarray(gy))
    assert y.dtype == np.float32
    assert_close(y.data, y_ref.detach().numpy())
    assert_close(tensor.grad, tz.grad.numpy())
    assert temperature.grad.shape == (1,)
    # dL/dT sums 210 float32 terms of both signs that largely cancel: a looser bound here,
    # and a tight one in float64 below
    assert_close(temperature.grad, tT.grad.numpy(), tol=1e-4)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("T", [0.7, 2.3])
def test_temperature_gradient_matches_torch_float64(xp, rng, name, T):
    torch = pytest.importorskip("torch")
    z, gy = logits(rng), rng.standard_normal(SHAPE)
    tT = torch.tensor([T], dtype=torch.float64, requires_grad=True)
    y_ref = getattr(torch.nn.functional, name)(torch.tensor(z) / tT, dim=1)
    y_ref.backward(torch.tensor(gy))

    temperature = Tensor(xp.asarray([T]), requires_grad=True)
    y = getattr(F, name + "_with_temperature")(xp.asarray(z), temperature, dim=1)
    y.backward(xp.asarray(gy))
    assert_close(temperature.grad, tT.grad.numpy(), tol=1e-12)


def test_temperature_one_is_plain_softmax(xp, rng):
    z = xp.asarray(logits(rng))
    np.testing.assert_allclose(to_numpy(F.softmax_with_temperature(z, 1.0).data),
                               to_numpy(F.softmax(z, 1).data), rtol=1e-12)


# ---------------------------------------------------------------- stability and errors
def test_large_logits_stay_finite(xp):
    z = xp.asarray([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    s, log_s = F.softmax(z, 1).data, F.log_softmax(z, 1).data
    np.testing.assert_allclose(to_numpy(s), [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(to_numpy(log_s), [[0.0, -1000.0, -2000.0]])
    assert np.isfinite(to_numpy(F.log_softmax_with_temperature(z, 0.5).data)).all()


def test_temperature_must_be_one_number(xp):
    with pytest.raises(ValueError, match="one number"):
        F.softmax_with_temperature(xp.zeros((2, 3)), xp.ones(2))
