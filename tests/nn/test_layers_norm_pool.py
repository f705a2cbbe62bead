"""nn.BatchNorm2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: modes, buffers, and torch's layers."""
import numpy as np
import pytest

from tinyseg import Tensor, nn, no_grad
from tinyseg.backend import device_name, to_numpy


def assert_close(actual, expected, tol=1e-5):
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error <= tol, f"relative error {error:.3g} > {tol:.1g}"


def test_batchnorm_state_is_parameters_plus_buffers():
    bn = nn.BatchNorm2d(4)
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert not any(p is bn.running_mean or p is bn.running_var for p in bn.parameters())
    assert not isinstance(bn.running_mean, Tensor)  # a raw array, never seen by the optimizer


def test_batchnorm_switches_with_train_and_eval(xp, rng):
    bn = nn.BatchNorm2d(3).to(device_name(xp))
    x = xp.asarray(rng.standard_normal((4, 3, 5, 6)) * 3 + 2, dtype=xp.float32)

    y_train = bn(x).data  # batch statistics: each channel comes out with mean 0, var 1
    assert float(xp.abs(y_train.mean(axis=(0, 2, 3))).max()) < 1e-5
    assert float(xp.abs(y_train.var(axis=(0, 2, 3)) - 1).max()) < 1e-3
    mean_after_train = to_numpy(bn.running_mean).copy()
    assert np.abs(mean_after_train).max() > 0.1  # moved towards the batch mean (about 2)

    bn.eval()
    y_eval = bn(x).data  # running statistics: (x - running_mean) / sqrt(running_var + eps)
    running_mean, running_var = to_numpy(bn.running_mean), to_numpy(bn.running_var)
    np.testing.assert_array_equal(running_mean, mean_after_train)  # eval does not update
    mean, var = running_mean.reshape(1, 3, 1, 1), running_var.reshape(1, 3, 1, 1)
    expected = (to_numpy(x) - mean) / np.sqrt(var + 1e-5)
    assert_close(y_eval, expected)
    assert float(xp.abs(y_eval - y_train).max()) > 0.1

    bn.train()
    bn(x)
    assert np.abs(to_numpy(bn.running_mean) - mean_after_train).max() > 0.1


def test_batchnorm_eval_backward_reaches_parameters(xp, rng):
    bn = nn.BatchNorm2d(3).to(device_name(xp)).eval()
    x = Tensor(xp.asarray(rng.standard_normal((2, 3, 4, 5)), dtype=xp.float32), requires_grad=True)
    (bn(x) * 2).sum().backward()
    assert x.grad.shape == x.shape and bn.weight.grad.shape == (3,) and bn.bias.grad.shape == (3,)
    assert_close(bn.bias.grad, np.full(3, 2 * 2 * 4 * 5))


def test_batchnorm_matches_torch_over_train_and_eval(xp, rng):
    """Three training steps, then eval: outputs, parameter gradients and buffers like torch's."""
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm2d(4, momentum=0.2).to(device_name(xp))
    ref = torch.nn.BatchNorm2d(4, momentum=0.2)
    gamma = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(gamma))
    ours.weight.data = xp.asarray(gamma)
    for step in range(4):
        if step == 3:
            ours.eval()
            ref.eval()
        x = (rng.standard_normal((3, 4, 5, 7)) * (step + 1) + step).astype(np.float32)
        gy = rng.standard_normal(x.shape).astype(np.float32)
        ours.zero_grad()
        ref.zero_grad()
        y = ours(Tensor(xp.asarray(x)))
        y.backward(xp.asarray(gy))
        y_ref = ref(torch.tensor(x))
        y_ref.backward(torch.tensor(gy))
        assert_close(y.data, y_ref.detach().numpy())
        assert_close(ours.weight.grad, ref.weight.grad.numpy())
        assert_close(ours.bias.grad, ref.bias.grad.numpy())
        for name in ("running_mean", "running_var"):
            assert_close(ours.state_dict()[name], ref.state_dict()[name].numpy())


def test_batchnorm_loads_running_stats_from_a_state_dict(xp):
    bn = nn.BatchNorm2d(2)
    state = {"weight": np.ones(2, np.float32), "bias": np.zeros(2, np.float32),
             "running_mean": np.array([1.0, -1.0], np.float32),
             "running_var": np.array([4.0, 0.25], np.float32)}
    bn.load_state_dict(state)
    bn.to(device_name(xp)).eval()
    with no_grad():
        y = bn(xp.ones((1, 2, 1, 1), xp.float32))
    expected = (1 - state["running_mean"]) / np.sqrt(state["running_var"] + 1e-5)  # [0, ~4]
    assert_close(y.data, expected.reshape(1, 2, 1, 1), tol=1e-6)


@pytest.mark.parametrize("ours, name, args", [
    (nn.MaxPool2d(3, 2, 1), "max_pool2d", (3, 2, 1)),  # ResNet's stem
    (nn.AvgPool2d((2, 3), (1, 2)), "avg_pool2d", ((2, 3), (1, 2))),
    (nn.AdaptiveAvgPool2d(1), "adaptive_avg_pool2d", (1,)),
    (nn.AdaptiveAvgPool2d((2, 3)), "adaptive_avg_pool2d", ((2, 3),)),
])
def test_pool_layers_match_torch(xp, rng, ours, name, args):
    torch = pytest.importorskip("torch")
    x = rng.permutation(2 * 3 * 7 * 9).reshape(2, 3, 7, 9).astype(np.float32) / 10
    expected = getattr(torch.nn.functional, name)(torch.tensor(x), *args).numpy()
    with no_grad():
        y = ours(xp.asarray(x))
    assert_close(y.data, expected, tol=1e-6)
