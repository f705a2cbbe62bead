"""The opt-in cuDNN path (tinyseg/cudnn.py) against tinyseg's own convolution.

On the GPU through cupyx.cudnn itself; on any machine through StandIn, a library with the
three functions of cupyx.cudnn that tinyseg calls (same positional and keyword-only
parameters, outputs written into the array passed in), computed by PyTorch on the CPU. It
checks what the wrappers and Conv2d's dispatch do with the arguments, not cuDNN.
"""
import sys

import numpy as np
import pytest

from tinyseg import Tensor, cudnn
from tinyseg import functional as F
from tinyseg.backend import BackendError, cupy_available, get_backend, to_numpy
from tinyseg.functional.conv import conv_output_size

# (N, C_in, H, W), (C_out, C_in / groups, kH, kW), stride, padding, dilation, groups
GEOMETRIES = [
    ((2, 3, 9, 11), (5, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 4, 8, 7), (6, 2, 3, 2), (2, 1), (1, 2), (2, 1), 2),
    ((2, 4, 9, 9), (4, 1, 3, 3), (2, 2), (2, 2), (2, 2), 4),   # depthwise, strided, atrous
    ((2, 6, 5, 6), (3, 6, 1, 1), (1, 1), (0, 0), (1, 1), 1),   # 1x1
]


class StandIn:
    """cupyx.cudnn's convolution_forward / _backward_data / _backward_filter, by PyTorch."""

    def __init__(self):
        self.calls = []

    def _check(self, name, out, pad, stride, dilation, groups, settings):
        self.calls.append(name)
        assert out.flags.c_contiguous  # cuDNN writes a C-contiguous NCHW output
        for pair in (pad, stride, dilation):
            assert isinstance(pair, tuple) and len(pair) == 2
        assert isinstance(groups, int)
        assert settings["tensor_core"] == "never" and settings["auto_tune"] is False

    def convolution_forward(self, x, W, b, y, pad, stride, dilation, groups, *, auto_tune,
                            tensor_core):
        import torch
        self._check("forward", y, pad, stride, dilation, groups, locals())
        y[...] = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(W), None, stride, pad,
                                            dilation, groups).numpy()

    def convolution_backward_data(self, W, x, b, y, pad, stride, dilation, groups, *,
                                  deterministic, auto_tune, tensor_core):
        import torch
        self._check("backward_data", y, pad, stride, dilation, groups, locals())
        y[...] = torch.nn.grad.conv2d_input(y.shape, torch.tensor(W), torch.tensor(x), stride,
                                            pad, dilation, groups).numpy()

    def convolution_backward_filter(self, x, gy, gW, pad, stride, dilation, groups, *,
                                    deterministic, auto_tune, tensor_core):
        import torch
        self._check("backward_filter", gW, pad, stride, dilation, groups, locals())
        gW[...] = torch.nn.grad.conv2d_weight(torch.tensor(x), gW.shape, torch.tensor(gy), stride,
                                              pad, dilation, groups).numpy()


def _plain(x, w, gy, stride, padding, dilation, groups):
    """y, dx, dW of tinyseg's own conv2d."""
    tx, tw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = F.conv2d(tx, tw, None, stride, padding, dilation, groups)
    y.backward(gy)
    return [to_numpy(a) for a in (y.data, tx.grad, tw.grad)]


def _arrays(xp, rng, geometry):
    x_shape, w_shape, stride, padding, dilation, groups = geometry
    out = [conv_output_size(*a) for a in zip(x_shape[2:], w_shape[2:], stride, padding, dilation)]
    x = xp.asarray(rng.standard_normal(x_shape))
    w = xp.asarray(rng.standard_normal(w_shape))
    gy = xp.asarray(rng.standard_normal((x_shape[0], w_shape[0], *out)))
    return x, w, gy, out


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[str(g[0]) for g in GEOMETRIES])
def test_wrappers_match_the_plain_convolution(rng, geometry):
    x, w, gy, out = _arrays(np, rng, geometry)
    args = geometry[2:]
    lib = StandIn()
    ours = [cudnn.conv2d(x, w, out, *args, lib=lib),
            cudnn.conv2d_grad_input(gy, w, x.shape, *args, lib=lib),
            cudnn.conv2d_grad_weight(gy, x, w.shape, *args, lib=lib)]
    for got, expected in zip(ours, _plain(x, w, gy, *args)):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert lib.calls == ["forward", "backward_data", "backward_filter"]


@pytest.mark.parametrize("frozen", [None, "input", "weight"])
def test_conv2d_dispatches_to_cudnn_when_active(rng, monkeypatch, frozen):
    """Conv2d with cudnn.active: all three computations go to the library, only the gradients
    that are needed, and the results are the plain path's."""
    geometry = GEOMETRIES[1]
    x, w, gy, _ = _arrays(np, rng, geometry)
    expected = _plain(x, w, gy, *geometry[2:])
    lib = StandIn()
    monkeypatch.setattr(cudnn, "active", lambda xp: True)
    monkeypatch.setattr(cudnn, "library", lambda: lib)
    tx = Tensor(x, requires_grad=frozen != "input")
    tw = Tensor(w, requires_grad=frozen != "weight")
    y = F.conv2d(tx, tw, None, *geometry[2:])
    y.backward(gy)
    np.testing.assert_allclose(to_numpy(y.data), expected[0], rtol=1e-10, atol=1e-10)
    if frozen != "input":
        np.testing.assert_allclose(tx.grad, expected[1], rtol=1e-10, atol=1e-10)
    if frozen != "weight":
        np.testing.assert_allclose(tw.grad, expected[2], rtol=1e-10, atol=1e-10)
    needed = {None: ["backward_data", "backward_filter"], "input": ["backward_filter"],
              "weight": ["backward_data"]}[frozen]
    assert lib.calls == ["forward"] + needed


def test_only_cupy_arrays_and_the_switch_turn_it_on(monkeypatch):
    monkeypatch.setenv("TINYSEG_CUDNN", "1")
    assert cudnn.enabled() and not cudnn.active(np)  # NumPy arrays keep the CPU path
    monkeypatch.setenv("TINYSEG_CUDNN", "0")
    assert not cudnn.enabled()


def test_missing_cudnn_is_a_one_line_error(monkeypatch):
    """Without CuPy (this machine) or with a CuPy that cannot load cuDNN: a BackendError that
    says what to install or unset."""
    from tinyseg import backend
    monkeypatch.setitem(sys.modules, "cupyx.cudnn", None)  # makes the import fail
    if not cupy_available():
        with pytest.raises(BackendError, match="needs CuPy|needs an NVIDIA GPU"):
            cudnn.library()
        monkeypatch.setattr(backend, "require_cupy", lambda: None)
    with pytest.raises(BackendError, match="TINYSEG_CUDNN=1 but CuPy cannot load cuDNN"):
        cudnn.library()


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[str(g[0]) for g in GEOMETRIES])
def test_cudnn_on_the_gpu_matches_the_plain_path(rng, monkeypatch, geometry):
    """cupyx.cudnn itself, float64 (no tensor cores, no TF32): the plain CuPy path's numbers."""
    if not cupy_available():
        pytest.skip("CuPy with a GPU is not available on this machine")
    cp = get_backend("cupy")
    x, w, gy, _ = _arrays(cp, rng, geometry)
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("TINYSEG_CUDNN", flag)
        results.append(_plain(x, w, gy, *geometry[2:]))
    for plain, vendor in zip(*results):
        np.testing.assert_allclose(vendor, plain, rtol=1e-9, atol=1e-9)
