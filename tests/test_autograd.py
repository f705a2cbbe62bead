"""The engine: graph building, topological backward, accumulation, broadcasting, no_grad."""
import numpy as np
import pytest

import tinyseg
import tinyseg.functional as F
from tinyseg import Function, Tensor, no_grad
from tinyseg.gradcheck import gradcheck


def test_chain_rule_and_accumulation_across_uses(xp):
    x = Tensor(xp.asarray([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * x + x * 3.0  # x used three times
    y.sum().backward()
    np.testing.assert_allclose(tinyseg.backend.to_numpy(x.grad), [5.0, 7.0, 9.0])


def test_diamond_graph_is_visited_in_topological_order():
    # z = (a*2) + (a*2)**2 reuses the intermediate b: its gradient must be complete before b's creator runs
    a = Tensor(np.array([0.5, -1.5]), requires_grad=True)
    b = a * 2.0
    z = b + b ** 2
    z.backward(np.ones(2))
    np.testing.assert_allclose(a.grad, 2.0 * (1 + 2 * 2.0 * a.data))


def test_backward_sums_in_the_same_order_every_run():
    """x feeds three products of the same depth whose gradients, 1e8, -1e8 and 1, sum to 1 or
    to 0 in float32 depending on the order. The latest-created function runs first (x * 1,
    x * -1e8, x * 1e8: 1 - 1e8 rounds to -1e8, then + 1e8 = 0), whatever the objects'
    addresses: the same gradient in every run, and so the same training run from a seed."""
    grads = set()
    for trial in range(20):
        padding = [Tensor(np.zeros(trial)) for _ in range(trial)]  # moves the next objects
        x = Tensor(np.zeros(1, np.float32), requires_grad=True)
        loss = (x * 1e8 + x * -1e8) + x * 1.0
        loss.backward()
        grads.add(float(x.grad[0]))
        del padding
    assert grads == {0.0}


def test_backward_twice_accumulates_into_leaf_grad():
    x = Tensor(np.array([2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    assert x.grad[0] == 6.0


def test_second_backward_through_freed_graph_is_an_error():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = (x * 3.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_backward_without_grad_needs_a_scalar():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2.0).backward()


def test_broadcasting_gradients_are_reduced_to_input_shapes(xp):
    a = xp.asarray(np.random.default_rng(1).standard_normal((3, 1, 4)))
    b = xp.asarray(np.random.default_rng(2).standard_normal((5, 1)))
    gradcheck(lambda p, q: (p + q) * q - p / (q * q + 1.0), [a, b])


@pytest.mark.parametrize("name, fn", [
    ("arithmetic", lambda a, b: (a * b[0] - a / (b[1] * b[1] + 2.0) + (-a) ** 3).exp().log()),
    ("reductions", lambda a, b: F.mean(a, axis=(0, 2)) * b.sum(axis=1, keepdims=True).sum()),
    ("shapes", lambda a, b: F.cat([a.reshape(6, 4), b.reshape(2, 4)], dim=0).transpose()),
    ("transpose axes", lambda a, b: a.transpose(2, 0, 1) * 2.0),
    ("indexing", lambda a, b: a[1:, ::2, [0, 0, 3]] + b[0, 1]),
    ("matmul", lambda a, b: a.reshape(6, 4) @ b.T),
])
def test_math_ops_gradcheck(xp, name, fn):
    rng = np.random.default_rng(3)
    a = xp.asarray(rng.uniform(0.5, 1.5, (2, 3, 4)))
    b = xp.asarray(rng.uniform(0.5, 1.5, (2, 4)))
    gradcheck(fn, [a, b])


def test_gradcheck_catches_a_wrong_backward():
    class WrongDouble(Function):
        def forward(self, x):
            return 2 * x

        def backward(self, gy):
            return gy  # should be 2 * gy

    with pytest.raises(AssertionError, match="wrong at index"):
        gradcheck(lambda x: WrongDouble()(x), [np.random.default_rng(0).standard_normal((2, 3))])


def test_no_grad_records_no_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert y.creator is None and not y.requires_grad
    assert tinyseg.is_grad_enabled()


def test_inputs_without_requires_grad_build_no_graph():
    y = Tensor(np.ones(3)) * 2.0
    assert y.creator is None


def test_scalars_take_the_tensor_dtype():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    assert (x * 0.5 + 1.0).dtype == np.float32
    assert (2.0 / x).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32  # like torch.tensor


def test_to_cpu_and_numpy_roundtrip():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert x.to("cpu").device == "cpu"
    np.testing.assert_array_equal(x.numpy(), np.arange(6.0).reshape(2, 3))


def test_to_cuda_without_cupy_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tinyseg.backend, "_cupy", None)  # as on a machine without CuPy
    with pytest.raises(tinyseg.BackendError, match="pip install"):
        Tensor(np.ones(2)).to("cuda")



def test_fancy_index_gradient_sums_repeats_in_pick_order(xp):
    """GetItem's backward (functional.math.scatter_add) against np.add.at, with a position
    picked 4 times and boolean and mixed indexes; repeats are summed in the order of the picks
    (float32 values whose sum depends on the order: 1e8 + 1 - 1e8 + 1)."""
    from tinyseg.backend import to_numpy
    from tinyseg.functional.math import scatter_add
    rng = np.random.default_rng(4)
    for shape, index in [((5, 3), (np.array([0, 2, 0, 0, 4, 0]),)),
                         ((4, 6), (slice(None), np.array([[1, 1], [5, 1]]))),
                         ((3, 4), (rng.random((3, 4)) > 0.5,))]:
        values = rng.standard_normal(np.zeros(shape)[index].shape)
        expected = np.zeros(shape)
        np.add.at(expected, index, values)
        device_index = tuple(xp.asarray(i) if isinstance(i, np.ndarray) else i for i in index)
        got = to_numpy(scatter_add(shape, device_index, xp.asarray(values)))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    ordered = xp.asarray(np.array([1e8, 1, -1e8, 1], np.float32))
    picks = xp.asarray(np.array([0, 0, 0, 0]))
    assert float(to_numpy(scatter_add((1,), (picks,), ordered))[0]) == float(
        ((np.float32(1e8) + np.float32(1)) + np.float32(-1e8)) + np.float32(1))
