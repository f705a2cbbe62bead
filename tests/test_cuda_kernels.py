"""Every CUDA kernel (tinyseg/fast/cuda_kernels.py) and every GPU twin (tinyseg/fast/cuda.py)
against the reference op: on the CPU through the emulator (the same source compiled as C++,
one thread), on the GPU through CuPy."""
import shutil
import subprocess

import numpy as np
import pytest

from tinyseg import Tensor
from tinyseg import functional as F
from tinyseg.backend import cupy_available, get_backend, to_numpy
from tinyseg.config import using_config
from tinyseg.fast import cuda, cuda_kernels
from tinyseg.functional.conv import Conv2d, conv_output_size
from tinyseg.functional.norm import BatchNorm

from cuda_emulator import Emulator

# (N, C, H, W), kernel, stride, padding, dilation
GEOMETRIES = [
    ((2, 3, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 4, 8, 5), (3, 2), (2, 1), (1, 2), (1, 2)),
    ((2, 2, 9, 11), (3, 3), (2, 2), (2, 2), (2, 2)),
    ((1, 5, 6, 6), (1, 1), (2, 2), (0, 0), (1, 1)),
    ((2, 3, 5, 7), (5, 3), (1, 3), (3, 0), (1, 1)),
]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    return Emulator(str(tmp_path_factory.mktemp("cuda_emulator")))


@pytest.fixture(params=["emulator", "cupy"])
def runner(request, emulator, monkeypatch):
    """(xp, launch): NumPy with the emulator, or CuPy with the real kernels on a GPU; the GPU
    twins of tinyseg/fast/cuda.py launch through it."""
    if request.param == "cupy":
        if not cupy_available():
            pytest.skip("CuPy with a GPU is not available on this machine")
        return get_backend("cupy"), cuda_kernels.cupy_launch
    monkeypatch.setattr(cuda, "launch", emulator.launch)
    return np, emulator.launch


def _out_size(shape, kernel, stride, padding, dilation):
    return tuple(conv_output_size(*args) for args in zip(shape[2:], kernel, stride, padding,
                                                          dilation))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[str(g[0]) for g in GEOMETRIES])
def test_im2col_and_col2im_match_their_twins(runner, rng, geometry, dtype):
    xp, launch = runner
    shape, kernel, stride, padding, dilation = geometry
    out_size = _out_size(shape, kernel, stride, padding, dilation)
    x = xp.asarray(rng.standard_normal(shape).astype(dtype))
    col = cuda_kernels.im2col(x, kernel, stride, padding, dilation, out_size, launch=launch)
    assert col.dtype == dtype
    np.testing.assert_array_equal(to_numpy(col), to_numpy(F.im2col(x, kernel, stride, padding,
                                                                   dilation)))
    c = xp.asarray(rng.standard_normal(col.shape).astype(dtype))
    ours = cuda_kernels.col2im(c, shape[2:], stride, padding, dilation, launch=launch)
    np.testing.assert_allclose(to_numpy(ours), to_numpy(F.col2im(c, shape[2:], stride, padding,
                                                                 dilation)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[str(g[0]) for g in GEOMETRIES])
def test_depthwise_kernels_match_the_plain_conv(runner, rng, geometry):
    """Forward and both gradients against conv2d's own depthwise branch (float64)."""
    xp, launch = runner
    shape, kernel, stride, padding, dilation = geometry
    out_size = _out_size(shape, kernel, stride, padding, dilation)
    c = shape[1]
    x = Tensor(xp.asarray(rng.standard_normal(shape)), requires_grad=True)
    w = Tensor(xp.asarray(rng.standard_normal((c, 1) + kernel)), requires_grad=True)
    y = F.conv2d(x, w, None, stride, padding, dilation, groups=c)
    gy = xp.asarray(rng.standard_normal(y.shape))
    y.backward(gy)
    ours = cuda_kernels.depthwise_forward(x.data, w.data, stride, padding, dilation, out_size,
                                          launch=launch)
    np.testing.assert_allclose(to_numpy(ours), to_numpy(y.data), rtol=1e-12, atol=1e-12)
    gx = cuda_kernels.depthwise_grad_input(gy, w.data, shape, stride, padding, dilation,
                                           launch=launch)
    np.testing.assert_allclose(to_numpy(gx), to_numpy(x.grad), rtol=1e-12, atol=1e-12)
    gw = cuda_kernels.depthwise_grad_weight(gy, x.data, kernel, stride, padding, dilation,
                                            launch=launch)
    np.testing.assert_allclose(to_numpy(gw), to_numpy(w.grad), rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA compiler)")
def test_kernels_compile_with_nvcc(tmp_path):
    """The source is valid CUDA (compiled to PTX, which needs no GPU), for float and double."""
    source = tmp_path / "kernels.cu"
    source.write_text(cuda_kernels.SOURCE)
    for c_type in cuda_kernels.C_TYPES.values():
        done = subprocess.run(["nvcc", "--ptx", f"-Dreal={c_type}", str(source), "-o",
                               str(tmp_path / f"kernels_{c_type}.ptx")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        ptx = (tmp_path / f"kernels_{c_type}.ptx").read_text()
        for name in cuda_kernels.NAMES:
            assert f".entry {name}(" in ptx


@pytest.mark.parametrize("groups", [1, 4])
def test_conv2d_kernel_twin_matches_the_reference(runner, rng, groups):
    """KernelConv2d (im2col/col2im, or the depthwise kernels) gives the reference Conv2d's
    output and gradients."""
    xp, _ = runner
    x0 = rng.standard_normal((2, 4, 9, 7))
    w0 = rng.standard_normal((4, 4 // groups, 3, 3))
    gy = rng.standard_normal((2, 4, 5, 4))
    results = []
    for op in (Conv2d, cuda.KernelConv2d):
        x, w = Tensor(xp.asarray(x0), requires_grad=True), Tensor(xp.asarray(w0), requires_grad=True)
        y = op(2, 2, 2, groups)(x, w)
        y.backward(xp.asarray(gy))
        results.append([to_numpy(a) for a in (y.data, x.grad, w.grad)])
    for plain, kernel in zip(*results):
        np.testing.assert_allclose(kernel, plain, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("labels_size, T", [((16, 24), 1.0), ((13, 21), 0.7), ((9, 18), 2.3)])
def test_fused_dupsample_cross_entropy_matches_the_composed_ops(runner, rng, labels_size, T):
    """The fused op (one kernel) against dupsample -> log_softmax_with_temperature -> crop ->
    nll_loss: the loss and the gradients of F, W, mean and T, with void pixels and label maps
    that are not multiples of r (float64)."""
    xp, launch = runner
    r, num_classes, dim, (height, width) = 4, 5, 6, labels_size
    h, w = -(-height // r), -(-width // r)
    F0 = rng.standard_normal((2, dim, h, w))
    W0 = rng.standard_normal((r * r * num_classes, dim)) * 0.5
    mean0 = rng.standard_normal(r * r * num_classes) * 0.1
    labels = rng.integers(0, num_classes, (2, height, width))
    labels[rng.random(labels.shape) < 0.2] = 255
    labels = xp.asarray(labels)
    results = []
    for fused in (False, True):
        tensors = [Tensor(xp.asarray(a), requires_grad=True) for a in (F0, W0, mean0, [T])]
        features, W, mean, temperature = tensors
        if fused:
            loss = cuda.fused_dupsample_cross_entropy(features, W, mean, temperature, labels, r)
        else:
            with using_config(impl="reference"):
                loss = F.dupsample_cross_entropy(features, W, mean, temperature, labels, r)
        loss.backward()
        results.append([loss.data] + [t.grad for t in tensors])
    for plain, fused in zip(*results):
        np.testing.assert_allclose(to_numpy(fused), to_numpy(plain), rtol=1e-10, atol=1e-12)


def test_fused_dupsample_cross_entropy_rejects_bad_labels(emulator, monkeypatch):
    monkeypatch.setattr(cuda, "launch", emulator.launch)
    features = Tensor(np.zeros((1, 3, 2, 2)))
    W, mean = np.zeros((4 * 4 * 5, 3)), np.zeros(4 * 4 * 5)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\) or 255"):
        cuda.fused_dupsample_cross_entropy(features, W, mean, 1.0, np.full((1, 8, 8), 7), 4)
    with pytest.raises(ValueError, match="do not fit features"):
        cuda.fused_dupsample_cross_entropy(features, W, mean, 1.0, np.zeros((1, 12, 8), int), 4)


def test_model_loss_with_the_kernels_on_the_gpu(rng):
    """A DUpsampling network's training loss and every gradient are the same with the fused
    GPU loss (and the conv kernels) as with the plain CuPy ops."""
    if not cupy_available():
        pytest.skip("CuPy with a GPU is not available on this machine")
    from tinyseg.models import build_model
    cp = get_backend("cupy")
    projection = (rng.standard_normal((16 * 16 * 5, 8)).astype(np.float32) * 0.1,
                  rng.standard_normal(16 * 16 * 5).astype(np.float32) * 0.1)
    images = cp.asarray(rng.standard_normal((2, 3, 50, 70)), np.float32)
    masks = rng.integers(0, 5, (2, 50, 70))
    masks[:, :3] = 255
    model = build_model("tiny_resnet", "dupsampling", num_classes=5, output_stride=16, dim=8,
                        projection=projection).to("cuda")
    results = []
    for kernels in (False, True):  # the same weights; training-mode batch norm: the same statistics
        for p in model.parameters():
            p.grad = None
        with using_config(cuda_kernels=kernels):
            loss = model.loss(images, cp.asarray(masks))
        loss.backward()
        results.append([to_numpy(loss.data)] + [to_numpy(p.grad) for p in model.parameters()])
    for plain, fused in zip(*results):
        np.testing.assert_allclose(fused, plain, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_kernels_match_the_plain_op(runner, rng, training, relu):
    """KernelBatchNorm (statistics by reductions, the elementwise steps in two kernels) against
    the reference BatchNorm: y, all gradients and the running statistics (float64)."""
    xp, _ = runner
    shape = (2, 3, 5, 7)
    x = xp.asarray(rng.standard_normal(shape) + 0.3)
    gamma, beta = xp.asarray(rng.uniform(0.5, 1.5, 3)), xp.asarray(rng.standard_normal(3))
    gy = xp.asarray(rng.standard_normal(shape))
    results = []
    for twin in (BatchNorm, cuda.KernelBatchNorm):
        running = [xp.full(3, 0.1), xp.ones(3)]
        op = twin(*running, training=training, momentum=0.1, eps=1e-5, relu=relu)
        op.needs_input_grad = (True, True, True)
        y = op.forward(x, gamma, beta)
        grads = op.backward(gy)
        results.append([y, *grads, *running])
    for plain, fused in zip(*results):
        np.testing.assert_allclose(to_numpy(fused), to_numpy(plain), rtol=1e-10, atol=1e-12)
