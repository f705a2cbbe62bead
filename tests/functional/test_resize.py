"""interpolate: gradients against finite differences, values and gradients against torch."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor
from tinyseg.backend import to_numpy
from tinyseg.gradcheck import gradcheck

SHAPE = (2, 3, 5, 7)  # odd, non-square

# (keyword arguments, what they exercise): up and down by non-integer factors, mixed, and size
RESIZES = [
    dict(size=(8, 11)),                  # up by 1.6 and 1.57
    dict(size=(3, 4)),                   # down by 0.6 and 0.57 (no antialiasing, like torch)
    dict(size=(9, 3)),                   # up in height, down in width
    dict(scale_factor=1.7),              # torch uses 1 / 1.7 in the coordinate map, not 5 / 8
    dict(scale_factor=(0.6, 2.3)),
    dict(size=(1, 1)),                   # a single output pixel
]


def assert_close(actual, expected, tol=1e-5):
    """Max abs error relative to the largest reference value (elementwise rtol breaks near 0)."""
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error <= tol, f"relative error {error:.3g} > {tol:.1g}"


def torch_interpolate(x, gy, **kwargs):
    """torch's output and input gradient for upstream gradient gy."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.interpolate(tx, **kwargs)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), tx.grad.numpy()


# ---------------------------------------------------------------- a worked example
def test_bilinear_two_to_four_by_hand(xp):
    """in = 2, out = 4, align_corners=False: src = (o + 0.5) / 2 - 0.5 = -0.25 (-> 0), 0.25,
    0.75, 1.25 (-> the last pixel), so a row [a, b] becomes [a, .75a + .25b, .25a + .75b, b]."""
    x = xp.asarray([[[[4.0, 8.0]]]])
    y = F.interpolate(x, size=(1, 4), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(to_numpy(y.data)[0, 0, 0], [4.0, 5.0, 7.0, 8.0])
    y = F.interpolate(x, size=(1, 4), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(to_numpy(y.data)[0, 0, 0], [4.0, 16 / 3, 20 / 3, 8.0])


def test_same_size_is_a_copy(xp, rng):
    x = xp.asarray(rng.standard_normal(SHAPE))
    for align_corners in (False, True):
        y = F.interpolate(x, size=SHAPE[2:], align_corners=align_corners)
        np.testing.assert_array_equal(to_numpy(y.data), to_numpy(x))


# ---------------------------------------------------------------- gradients (float64)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kwargs", RESIZES, ids=str)
def test_gradcheck_bilinear(xp, rng, kwargs, align_corners):
    x = xp.asarray(rng.standard_normal(SHAPE))
    gradcheck(lambda x: F.interpolate(x, mode="bilinear", align_corners=align_corners, **kwargs),
              [x])


@pytest.mark.parametrize("kwargs", [dict(size=(8, 4)), dict(scale_factor=(1.5, 0.7))], ids=str)
def test_gradcheck_nearest(xp, rng, kwargs):
    x = xp.asarray(rng.standard_normal(SHAPE))
    gradcheck(lambda x: F.interpolate(x, mode="nearest", **kwargs), [x])


# ---------------------------------------------------------------- conformance with torch
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kwargs", RESIZES, ids=str)
def test_bilinear_matches_torch_float32(xp, rng, kwargs, align_corners):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    y = F.interpolate(Tensor(xp.asarray(x), requires_grad=True), mode="bilinear",
                      align_corners=align_corners, **kwargs)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y_ref, gx_ref = torch_interpolate(x, gy, mode="bilinear", align_corners=align_corners,
                                      **kwargs)
    assert y.dtype == np.float32
    assert_close(y.data, y_ref)
    leaf = y.creator.inputs[0]
    y.backward(xp.asarray(gy))
    assert_close(leaf.grad, gx_ref)


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_matches_torch_float64(xp, rng, align_corners):
    """In float64 both compute the same weights: agreement to rounding error."""
    x = rng.standard_normal((1, 2, 13, 9))
    for kwargs in (dict(size=(31, 20)), dict(size=(4, 5)), dict(scale_factor=(2.7, 0.45))):
        y = F.interpolate(xp.asarray(x), mode="bilinear", align_corners=align_corners, **kwargs)
        y_ref, _ = torch_interpolate(x, np.zeros(y.shape), mode="bilinear",
                                     align_corners=align_corners, **kwargs)
        assert_close(y.data, y_ref, tol=1e-12)


def test_nearest_label_map_matches_torch(xp, rng):
    """Integer label maps resize exactly as torch's "nearest" does (up, down, by scale)."""
    torch = pytest.importorskip("torch")
    labels = rng.integers(0, 21, (2, 1, 13, 17))
    for kwargs in (dict(size=(40, 9)), dict(size=(5, 33)), dict(scale_factor=(1.7, 0.3))):
        y = F.interpolate(xp.asarray(labels), mode="nearest", **kwargs)
        y_ref = torch.nn.functional.interpolate(torch.tensor(labels, dtype=torch.float64),
                                                mode="nearest", **kwargs).numpy()
        assert y.dtype == labels.dtype
        np.testing.assert_array_equal(to_numpy(y.data), y_ref.astype(labels.dtype))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("call, message", [
    (lambda x: F.interpolate(x[0], size=(4, 4)), "4-D input"),
    (lambda x: F.interpolate(x, size=(4, 4), scale_factor=2.0), "exactly one"),
    (lambda x: F.interpolate(x), "exactly one"),
    (lambda x: F.interpolate(x, size=(4, 4, 4)), "2 values"),
    (lambda x: F.interpolate(x, size=(4, 4), mode="bicubic"), "mode"),
    (lambda x: F.interpolate(x, size=(4, 4), mode="nearest", align_corners=True), "align_corners"),
    (lambda x: F.interpolate(x, scale_factor=0.1), "positive"),
    (lambda x: F.interpolate(x.astype(np.int64), size=(4, 4)), "mode='nearest'"),
])
def test_errors(xp, call, message):
    x = xp.zeros((1, 1, 5, 7))
    with pytest.raises(ValueError, match=message):
        call(x)
