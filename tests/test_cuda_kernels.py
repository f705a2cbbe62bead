"""Every CUDA kernel (tinyseg/cuda_kernels.py) against its plain-xp twin: on the CPU through
the emulator (the same source compiled as C++, one thread), on the GPU through CuPy."""
import shutil
import subprocess

import numpy as np
import pytest

from tinyseg import Tensor, cuda_kernels
from tinyseg import functional as F
from tinyseg.backend import cupy_available, get_backend, to_numpy
from tinyseg.functional.conv import conv_output_size

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
def runner(request, emulator):
    """(xp, launch): NumPy with the emulator, or CuPy with the real kernels on a GPU."""
    if request.param == "cupy":
        if not cupy_available():
            pytest.skip("CuPy with a GPU is not available on this machine")
        return get_backend("cupy"), cuda_kernels.cupy_launch
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
def test_conv2d_with_the_kernels_on_the_gpu(rng, monkeypatch, groups):
    """conv2d on CuPy with TINYSEG_CUDA_KERNELS=1 (im2col/col2im, or the depthwise kernels)
    gives the plain path's output and gradients."""
    if not cupy_available():
        pytest.skip("CuPy with a GPU is not available on this machine")
    cp = get_backend("cupy")
    x0 = rng.standard_normal((2, 4, 9, 7))
    w0 = rng.standard_normal((4, 4 // groups, 3, 3))
    gy = rng.standard_normal((2, 4, 5, 4))
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("TINYSEG_CUDA_KERNELS", flag)
        x, w = Tensor(cp.asarray(x0), requires_grad=True), Tensor(cp.asarray(w0), requires_grad=True)
        y = F.conv2d(x, w, None, 2, 2, 2, groups)
        y.backward(cp.asarray(gy))
        results.append([to_numpy(a) for a in (y.data, x.grad, w.grad)])
    for plain, kernel in zip(*results):
        np.testing.assert_allclose(kernel, plain, rtol=1e-10, atol=1e-10)
