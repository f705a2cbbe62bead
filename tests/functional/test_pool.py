"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: finite differences, and torch as the reference."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor
from tinyseg.backend import to_numpy
from tinyseg.gradcheck import gradcheck

# (input shape, kernel_size, stride, padding): square and non-square, stride below, equal to
# and above the kernel, with and without padding; ResNet's stem pool (3, 2, 1) among them.
GEOMETRIES = [
    ((2, 3, 5, 7), 2, None, 0),
    ((2, 3, 7, 6), 3, 2, 1),
    ((1, 2, 6, 9), (2, 3), (1, 2), (1, 0)),
    ((2, 2, 8, 5), (3, 2), (3, 1), (1, 1)),
]


def distinct_values(rng, shape):
    """A random permutation of well-separated values: no ties, so max pool is differentiable."""
    return rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 10


def assert_close(actual, expected, tol=1e-6):
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error <= tol, f"relative error {error:.3g} > {tol:.1g}"


def torch_pool(name, x, gy, *args):
    """torch's output and input gradient for torch.nn.functional.<name>(x, *args), float32."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    y = getattr(torch.nn.functional, name)(tx, *args)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), tx.grad.numpy()


def torch_output_shape(x, name, *args):
    torch = pytest.importorskip("torch")
    return tuple(getattr(torch.nn.functional, name)(torch.tensor(x), *args).shape)


def run_pool(xp, fn, x, gy, *args):
    tx = Tensor(xp.asarray(x), requires_grad=True)
    y = fn(tx, *args)
    y.backward(xp.asarray(gy))
    return y.data, tx.grad


# ---------------------------------------------------------------- max pool
@pytest.mark.parametrize("shape, kernel, stride, padding", GEOMETRIES)
def test_max_pool_gradcheck(xp, rng, shape, kernel, stride, padding):
    x = xp.asarray(distinct_values(rng, shape))
    gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding), [x])


@pytest.mark.parametrize("shape, kernel, stride, padding", GEOMETRIES)
def test_max_pool_matches_torch(xp, rng, shape, kernel, stride, padding):
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::5] = 0.5  # ties: the gradient must go to the first maximum, like torch
    args = (kernel, stride if stride is not None else kernel, padding)
    gy = rng.standard_normal(torch_output_shape(x, "max_pool2d", *args)).astype(np.float32)
    y_ref, gx_ref = torch_pool("max_pool2d", x, gy, *args)
    y, gx = run_pool(xp, F.max_pool2d, x, gy, kernel, stride, padding)
    assert y.dtype == np.float32
    assert_close(y, y_ref, tol=0)  # a max is exact
    assert_close(gx, gx_ref)  # overlapping windows may add their shares in another order
    y_no_grad = F.max_pool2d(xp.asarray(x), kernel, stride, padding)  # no argmax kept
    assert_close(y_no_grad.data, y_ref, tol=0)


def test_max_pool_propagates_nan(xp):
    x = xp.zeros((1, 1, 4, 4), xp.float32)
    x[0, 0, 1, 1] = xp.nan
    y = to_numpy(F.max_pool2d(x, 2).data)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


# ---------------------------------------------------------------- average pool
@pytest.mark.parametrize("shape, kernel, stride, padding", GEOMETRIES)
def test_avg_pool_gradcheck(xp, rng, shape, kernel, stride, padding):
    x = xp.asarray(rng.standard_normal(shape))
    gradcheck(lambda x: F.avg_pool2d(x, kernel, stride, padding), [x])


@pytest.mark.parametrize("shape, kernel, stride, padding", GEOMETRIES)
def test_avg_pool_matches_torch(xp, rng, shape, kernel, stride, padding):
    x = rng.standard_normal(shape).astype(np.float32)
    args = (kernel, stride if stride is not None else kernel, padding)
    gy = rng.standard_normal(torch_output_shape(x, "avg_pool2d", *args)).astype(np.float32)
    y_ref, gx_ref = torch_pool("avg_pool2d", x, gy, *args)  # count_include_pad=True by default
    y, gx = run_pool(xp, F.avg_pool2d, x, gy, kernel, stride, padding)
    assert y.dtype == np.float32
    assert_close(y, y_ref)
    assert_close(gx, gx_ref)


# ---------------------------------------------------------------- adaptive average pool
@pytest.mark.parametrize("output_size", [1, (1, 1), (2, 3), (3, 2), 7])
def test_adaptive_avg_pool_matches_torch(xp, rng, output_size):
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    gy = rng.standard_normal(torch_output_shape(x, "adaptive_avg_pool2d", output_size))
    y_ref, gx_ref = torch_pool("adaptive_avg_pool2d", x, gy.astype(np.float32), output_size)
    y, gx = run_pool(xp, F.adaptive_avg_pool2d, x, gy.astype(np.float32), output_size)
    assert y.dtype == np.float32
    assert_close(y, y_ref)
    assert_close(gx, gx_ref)


def test_global_avg_pool_is_the_mean(xp, rng):
    x = rng.standard_normal((2, 4, 3, 5))
    y = F.adaptive_avg_pool2d(xp.asarray(x), 1)
    assert y.shape == (2, 4, 1, 1)
    assert_close(y.data, x.mean(axis=(2, 3), keepdims=True), tol=1e-12)


@pytest.mark.parametrize("output_size", [1, (2, 3)])
def test_adaptive_avg_pool_gradcheck(xp, rng, output_size):
    x = xp.asarray(rng.standard_normal((2, 3, 5, 7)))
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, output_size), [x])


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pool_errors(xp, pool):
    x = xp.zeros((1, 2, 4, 4), xp.float32)
    with pytest.raises(ValueError, match="4-D"):
        pool(xp.zeros((2, 4, 4), xp.float32), 2)
    with pytest.raises(ValueError, match="at most half"):
        pool(x, 2, 1, 2)
    with pytest.raises(ValueError, match="smaller than kernel_size"):
        pool(x, 5)
    with pytest.raises(ValueError, match="must be positive"):
        pool(x, 2, 0)
    with pytest.raises(ValueError, match="pair of ints"):
        pool(x, (2, 2, 2))


def test_adaptive_pool_errors(xp):
    with pytest.raises(ValueError, match="4-D"):
        F.adaptive_avg_pool2d(xp.zeros((2, 4, 4), xp.float32), 1)
    with pytest.raises(ValueError, match="positive"):
        F.adaptive_avg_pool2d(xp.zeros((1, 2, 4, 4), xp.float32), 0)
