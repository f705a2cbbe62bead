"""conv2d, im2col and col2im: gradients (float64), conformance with torch, argument errors."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import Tensor
from tinyseg.backend import to_numpy
from tinyseg.gradcheck import gradcheck


def assert_close(actual, expected, tol=1e-5):
    """Max abs error relative to the largest reference value (elementwise rtol breaks near 0)."""
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert error <= tol, f"relative error {error:.3g} > {tol:.1g}"


# ---------------------------------------------------------------- gradients (float64)
# name: (input shape, weight shape, stride, padding, dilation, groups, bias)
GRADCHECK_CASES = {
    "plain": ((2, 3, 5, 7), (4, 3, 3, 3), 1, 0, 1, 1, True),
    "stride2-dilation2": ((2, 3, 9, 8), (2, 3, 3, 3), 2, 1, 2, 1, True),
    "padding": ((1, 2, 5, 4), (3, 2, 3, 3), 1, (2, 1), 1, 1, True),
    "kernel3x2-input5x7": ((2, 2, 5, 7), (3, 2, 3, 2), (1, 2), 1, 1, 1, True),
    "groups2": ((2, 4, 5, 6), (6, 2, 3, 3), 1, 1, 1, 2, True),
    "depthwise": ((2, 3, 5, 7), (3, 1, 3, 3), 1, 1, 1, 3, True),
    "depthwise-stride2-dilation2": ((1, 3, 7, 8), (3, 1, 3, 2), 2, 2, (2, 1), 3, True),
    "depthwise-multiplier2": ((1, 2, 5, 6), (4, 1, 3, 3), 1, 1, 1, 2, True),
    "1x1": ((2, 5, 3, 7), (4, 5, 1, 1), 1, 0, 1, 1, True),
    "1x1-stride2": ((2, 3, 5, 7), (4, 3, 1, 1), 2, 0, 1, 1, True),
    "no-bias": ((2, 3, 5, 7), (4, 3, 3, 3), 1, 1, 1, 1, False),
}


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=list(GRADCHECK_CASES))
def test_gradcheck(xp, rng, case):
    """Backward for input, weight and bias against finite differences (random upstream gradient)."""
    x_shape, w_shape, stride, padding, dilation, groups, bias = GRADCHECK_CASES[case]
    inputs = [xp.asarray(rng.standard_normal(x_shape)), xp.asarray(rng.standard_normal(w_shape))]
    if bias:
        inputs.append(xp.asarray(rng.standard_normal(w_shape[0])))

    def conv(x, w, b=None):
        return F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gradcheck(conv, inputs)


@pytest.mark.parametrize("frozen", ["input", "weight"])
def test_gradient_only_where_asked(xp, rng, frozen):
    """needs_input_grad: a frozen input or weight gets no gradient, the other one is still right."""
    for groups, w_shape in [(1, (4, 3, 3, 3)), (3, (3, 1, 3, 3))]:  # dense and depthwise
        x = Tensor(xp.asarray(rng.standard_normal((2, 3, 5, 7))), requires_grad=frozen != "input")
        w = Tensor(xp.asarray(rng.standard_normal(w_shape)), requires_grad=frozen != "weight")
        gy = rng.standard_normal((2, w_shape[0], 5, 7))
        F.conv2d(x, w, padding=1, groups=groups).backward(xp.asarray(gy))
        x_ref, w_ref = torch_conv_grads(to_numpy(x.data), to_numpy(w.data), None, gy, 1, 1, 1, groups)[1:3]
        if frozen == "input":
            assert x.grad is None
            assert_close(w.grad, w_ref, tol=1e-12)
        else:
            assert w.grad is None
            assert_close(x.grad, x_ref, tol=1e-12)


# ---------------------------------------------------------------- conformance with torch (float32)
def torch_conv_grads(x, w, b, gy, stride, padding, dilation, groups):
    """torch.nn.functional.conv2d's output and the gradients of <y, gy> for x, w and b."""
    import torch
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    y = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    y.backward(torch.tensor(gy))
    grads = [t.grad.numpy() for t in (tx, tw)] + [None if tb is None else tb.grad.numpy()]
    return [y.detach().numpy()] + grads


# (C_in, C_out, kernel, stride, padding, dilation, groups, bias): every argument, alone and mixed
TORCH_CASES = [
    (3, 5, 3, 1, 0, 1, 1, True),
    (3, 5, 3, 1, 1, 1, 1, False),
    (3, 4, 1, 1, 0, 1, 1, True),                  # 1x1: columns are the input itself
    (3, 4, 1, 2, 0, 1, 1, True),                  # 1x1 with stride: im2col
    (3, 4, (3, 2), (2, 1), (1, 2), 1, 1, True),   # non-square kernel, stride and padding
    (4, 6, 3, 2, 2, 2, 1, True),                  # stride + dilation (atrous)
    (4, 6, (3, 1), 1, (2, 0), (2, 3), 1, True),   # non-square dilation
    (4, 6, 5, 1, 2, 1, 2, True),                  # groups=2
    (6, 6, 3, 1, 1, 1, 3, False),                 # groups=3
    (5, 5, 3, 1, 1, 1, 5, True),                  # depthwise
    (5, 5, 3, 1, 0, 1, 5, True),                  # depthwise, no padding
    (5, 5, 3, 2, 1, 1, 5, True),                  # depthwise, stride 2
    (5, 5, 2, 2, 0, 1, 5, True),                  # depthwise, stride 2: the last row is never read
    (5, 5, 3, 1, 2, 2, 5, False),                 # depthwise, dilation 2 ("same" atrous)
    (5, 5, (2, 3), (1, 2), (0, 1), 1, 5, True),   # depthwise, non-square everything
    (4, 8, 3, 1, 1, 1, 4, True),                  # depthwise with channel multiplier 2
    (3, 4, 3, 1, 12, 12, 1, True),                # rate 12 on 9x11: only the centre tap is active
    (3, 4, 3, 1, 10, 10, 1, False),               # rate 10: outer rows inactive, columns active
    (5, 5, 3, 1, 9, 9, 5, True),                  # depthwise, only the centre tap active
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[str(i) for i in range(len(TORCH_CASES))])
def test_matches_torch(xp, rng, case):
    c_in, c_out, kernel, stride, padding, dilation, groups, bias = case
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    x = rng.standard_normal((2, c_in, 9, 11)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in // groups, kh, kw)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) if bias else None
    tensors = [Tensor(xp.asarray(a), requires_grad=True) for a in (x, w) + ((b,) if bias else ())]
    y = F.conv2d(*tensors[:2], tensors[2] if bias else None, stride, padding, dilation, groups)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(xp.asarray(gy))
    reference = torch_conv_grads(x, w, b, gy, stride, padding, dilation, groups)
    assert y.dtype == np.float32 and tensors[0].grad.dtype == np.float32
    assert tensors[1].grad.flags.c_contiguous  # laid out like W, for the optimizer's chunks
    assert_close(y.data, reference[0])
    for tensor, expected in zip(tensors, reference[1:]):
        assert_close(tensor.grad, expected)


def test_depthwise_in_channel_slabs(xp, rng, monkeypatch):
    """A cache size of two channels splits C=5 into slabs 2 + 2 + 1: same result as torch."""
    from tinyseg.fast import parallel
    n, c, h, w = 2, 5, 6, 7
    monkeypatch.setattr(parallel, "CACHE_BYTES", 2 * n * (h + 2) * (w + 2) * 4)
    if xp is np:
        assert len(parallel.channel_slabs(np.zeros((n, c, h + 2, w + 2), np.float32))) == 3
    test_matches_torch(xp, rng, (c, c, 3, 1, 1, 1, c, True))


@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (3, 2, 1, 1), (3, (2, 3), (0, 2), (1, 2)), (3, 1, 3, 3),
    (2, 2, 0, 1),  # dx's correlation needs 2 zero rows after each image, 1 before
])
def test_depthwise_images_stacked_do_not_mix(xp, rng, kernel, stride, padding, dilation):
    """depthwise.py stacks the batch into one tall image, `rows` rows per image (rounded up to
    the stride): 3 images of odd sizes, each output must read its own image only."""
    x = rng.standard_normal((3, 4, 9, 7)).astype(np.float32)
    x[1] += 100.0  # a leak from the middle image would show in its neighbours' outputs
    w = rng.standard_normal((4, 1, kernel, kernel)).astype(np.float32)
    tx, tw = Tensor(xp.asarray(x), requires_grad=True), Tensor(xp.asarray(w), requires_grad=True)
    y = F.conv2d(tx, tw, None, stride, padding, dilation, 4)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(xp.asarray(gy))
    reference = torch_conv_grads(x, w, None, gy, stride, padding, dilation, 4)
    for ours, expected in zip((y.data, tx.grad, tw.grad), reference[:3]):
        assert_close(ours, expected)


def test_im2col_col2im_are_adjoint(xp, rng):
    """<im2col(x), c> = <x, col2im(c)>: col2im is exactly the transpose of im2col."""
    args = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    x = rng.standard_normal((2, 3, 6, 7))
    col = F.im2col(xp.asarray(x), (3, 2), **args)
    assert col.shape == (2, 3, 3, 2, 3, 9)  # H_out = (6 + 2 - 2 - 1) // 2 + 1, W_out = 7 + 4 - 2
    c = rng.standard_normal(col.shape)
    left = float((to_numpy(col) * c).sum())
    right = float((x * to_numpy(F.col2im(xp.asarray(c), (6, 7), **args))).sum())
    assert abs(left - right) <= 1e-10 * abs(left)


# ---------------------------------------------------------------- argument errors
def _arrays(x_shape, w_shape, b_shape=None, dtype=np.float32):
    b = None if b_shape is None else np.zeros(b_shape, dtype)
    return np.zeros(x_shape, dtype), np.zeros(w_shape, dtype), b


@pytest.mark.parametrize("x_shape, w_shape, b_shape, kwargs, message", [
    ((2, 3, 5, 5), (4, 2, 3, 3), None, {}, "expects 2 input channels .* the input has 3"),
    ((2, 4, 5, 5), (4, 1, 3, 3), None, {"groups": 2}, "expects 2 input channels"),
    ((2, 3, 5, 5), (4, 1, 3, 3), None, {"groups": 2}, "groups=2 must divide both C_in=3"),
    ((2, 4, 5, 5), (3, 2, 3, 3), None, {"groups": 2}, "must divide both C_in=4 and C_out=3"),
    ((2, 3, 5, 5), (4, 3, 3, 3), None, {"groups": 0}, "groups must be a positive int"),
    ((2, 3, 2, 5), (4, 3, 3, 3), None, {}, "output size 0x3 is empty"),
    ((2, 3, 5, 5), (4, 3, 3, 3), None, {"dilation": 3}, "output size -1x-1 is empty"),
    ((2, 3, 5, 5), (4, 3, 3, 3), (3,), {}, r"bias must have shape \(4,\)"),
    ((3, 5, 5), (4, 3, 3, 3), None, {}, r"input must be \(N, C_in, H, W\)"),
    ((2, 3, 5, 5), (4, 3, 3), None, {}, r"weight must be \(C_out, C_in/groups, kH, kW\)"),
    ((2, 3, 5, 5), (4, 3, 3, 3), None, {"stride": 0}, "need stride >= 1"),
    ((2, 3, 5, 5), (4, 3, 3, 3), None, {"padding": (1, -1)}, "padding >= 0"),
    ((2, 3, 5, 5), (4, 3, 3, 3), None, {"stride": (1, 2, 3)}, "stride must be an int or a pair"),
])
def test_errors(x_shape, w_shape, b_shape, kwargs, message):
    x, w, b = _arrays(x_shape, w_shape, b_shape)
    with pytest.raises(ValueError, match=message):
        F.conv2d(x, w, b, **kwargs)


def test_dtype_mismatch_is_refused():
    x, w, _ = _arrays((1, 2, 4, 4), (3, 2, 3, 3))
    with pytest.raises(TypeError, match="must share one dtype, got float64, float32"):
        F.conv2d(x.astype(np.float64), w)
