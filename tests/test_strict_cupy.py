"""The strict CuPy stand-in of tests/strict_cupy: that it refuses what CuPy refuses, offers only
CuPy 14's names, writes through views and runs RawKernels thread by thread; and tinyseg's CuPy
command lines through it (train -> stop -> resume -> evaluate), against the NumPy backend."""
import copy
import importlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import strict_cupy
from strict_cupy import NAMES
from tinyseg import nn
from tinyseg.data import ensure_synthetic
from tinyseg.training import load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLICIT = "Implicit conversion to a NumPy array is not allowed"


@pytest.fixture
def cp():
    return strict_cupy.modules()["cupy"]


def test_implicit_conversion_to_numpy_raises_as_in_cupy(cp):
    a = cp.arange(6.0).reshape(2, 3)
    for convert in (np.asarray, np.array, lambda x: np.testing.assert_allclose(x, 0),
                    lambda x: np.zeros(6)[x.astype(np.int64)],
                    lambda x: np.zeros((2, 3)).__setitem__(Ellipsis, x)):
        with pytest.raises(TypeError, match=IMPLICIT):
            convert(a)
    assert isinstance(a.get(), np.ndarray) and not isinstance(a, np.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(a), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(cp.asnumpy([1, 2]), [1, 2])


def test_numpy_operands_are_refused_and_scalars_mix(cp):
    a, host = cp.ones((2, 3)), np.ones((2, 3))
    for mix in (lambda: a + host, lambda: host * a, lambda: a.__iadd__(host),
                lambda: cp.add(a, host), lambda: np.add(host, a), lambda: cp.maximum(a, host),
                lambda: cp.concatenate([a, host]), lambda: cp.where(a > 0, a, host),
                lambda: a @ host.T, lambda: cp.add(a, np.array(1.0)), lambda: cp.add(a, [1, 2, 3]),
                lambda: cp.ascontiguousarray(host)):
        with pytest.raises(TypeError):
            mix()
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        a[:] = host
    result = (a + 1) * np.float32(2) - 0.5 + np.int64(1)
    assert isinstance(result, cp.ndarray) and result.dtype == np.float64
    np.testing.assert_array_equal(result.get(), np.full((2, 3), 4.5))
    a[cp.asarray([0])] = np.zeros((1, 3))  # an advanced index copies host values over, as in CuPy
    a[np.array([1])] = 5
    np.testing.assert_array_equal(a.get(), [[0, 0, 0], [5, 5, 5]])


def test_numpy_functions_on_device_arrays_are_cupys_or_fail(cp):
    a = cp.arange(4.0)
    assert isinstance(np.exp(a), cp.ndarray) and isinstance(np.concatenate([a, a]), cp.ndarray)
    assert isinstance(np.sum(a), cp.ndarray) and np.sum(a).ndim == 0  # 0-d, no NumPy scalar
    with pytest.raises(TypeError, match="no implementation found"):
        np.insert(a, 0, 1.0)  # CuPy 14 has no insert


def test_names_are_exactly_cupy_14s(cp):
    for name, listed in NAMES["modules"].items():
        module = strict_cupy.modules()[name]
        assert {n for n in dir(module) if not n.startswith("_")} == set(listed), name
    for missing in ("errstate", "insert", "matrix", "object_", "add_at", "geomspace"):
        assert hasattr(np, missing) or missing == "add_at"
        with pytest.raises(AttributeError, match=f"CuPy 14.2.0 has no cupy.{missing}"):
            getattr(cp, missing)
    cupyx = strict_cupy.modules()["cupyx"]
    with pytest.raises(AttributeError):
        cupyx.cudnn  # noqa: B018 (CuPy 14 removed cuDNN)
    with pytest.raises(NotImplementedError, match="strict_cupy: cupy.fuse is not emulated"):
        cp.fuse(lambda x: x)
    with pytest.raises(NotImplementedError, match="cupy.ndarray.toDlpack is not emulated"):
        cp.zeros(1).toDlpack()
    with pytest.raises(NotImplementedError, match="`cupy_maximum.at` is not supported yet"):
        cp.maximum.at(cp.zeros(3), cp.asarray([0]), 1.0)
    with pytest.raises(TypeError, match="Wrong arguments"):
        cp.add(cp.ones(2), 1, where=cp.ones(2, bool))  # CuPy's ufuncs take no where=
    assert cp.float32 is np.float32 and cp.newaxis is None and cp.NINF == -np.inf


def test_the_array_type_offers_nothing_cupys_lacks(cp):
    extra = set(dir(cp.ndarray)) - {"_array"} - set(NAMES["classes"]["cupy.ndarray"])
    assert not extra, extra
    a = cp.asarray(3)
    with pytest.raises(TypeError):
        range(a)  # CuPy's ndarray has no __index__
    with pytest.raises(AttributeError):
        a.itemset(0)
    with pytest.raises(AttributeError):
        a.extra = 1  # no instance dictionary


def test_import_cupyx_cudnn_fails(monkeypatch):
    strict_cupy.install(monkeypatch)
    with pytest.raises(ImportError):
        importlib.import_module("cupyx.cudnn")
    import cupy.lib.stride_tricks
    stride_tricks = strict_cupy.modules()["cupy.lib.stride_tricks"]
    assert cupy.lib.stride_tricks.as_strided is stride_tricks.as_strided


def test_views_write_through_to_their_base(cp):
    x = cp.zeros((3, 4))
    x[:, 1] += 1                     # getitem view, in-place add, setitem back
    column = x[:, 2]
    column += 2                      # a view's in-place op
    x.T[3] = 3                       # a transposed view
    x.reshape(12)[0] = 4             # a reshaped view
    cp.multiply(x[1], 10, out=x[1])  # out= into a view
    np.add(x[2], 1, out=x[2])        # NumPy's ufunc with out=, through __array_ufunc__
    expected = np.zeros((3, 4))
    expected[:, 1], expected[:, 2], expected[:, 3], expected[0, 0] = 1, 2, 3, 4
    expected[1] *= 10
    expected[2] += 1
    np.testing.assert_array_equal(x.get(), expected)
    out = cp.empty(4)
    assert cp.add(x[0], x[1], out=out) is out
    cp.add.at(x, (cp.asarray([0, 0]), cp.asarray([1, 1])), 1.0)  # repeated indices both count
    assert float(x[0, 1]) == 3.0


def test_transfers_copy_and_scalars_convert(cp):
    host = np.arange(3.0)
    device = cp.asarray(host)
    host[0] = 7  # the device copy does not see it
    assert float(device[0]) == 0.0 and cp.asarray(device) is device
    assert cp.asarray(device, np.float32).dtype == np.float32
    total = device.sum()
    assert isinstance(total, cp.ndarray) and total.shape == () and float(total) == 3.0
    assert int(total) == 3 and total.item() == 3.0 and f"{total:.1f}" == "3.0"
    assert bool(cp.asarray([1])) and len(device) == 3 and device.tolist() == [0.0, 1.0, 2.0]
    assert [float(v) for v in device] == [0.0, 1.0, 2.0]
    assert all(isinstance(v, cp.ndarray) and v.ndim == 0 for v in device)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(device)
    assert device.shape == (3,) and device.nbytes == 24 and device.strides == (8,)
    assert device.flags.c_contiguous and not device[::2].flags.c_contiguous
    assert cp.get_array_module(device) is cp and cp.get_array_module(host) is np
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(device)).get(), device.get())
    np.testing.assert_array_equal(copy.deepcopy(device).get(), device.get())
    with pytest.raises(ValueError, match="Unsupported dtype"):
        cp.asarray(np.array(["a"]))


def test_cuda_has_one_device_and_an_empty_pool(cp):
    assert cp.cuda.runtime.getDeviceCount() == 1
    free, total = cp.cuda.Device().mem_info
    assert 0 < free <= total
    assert cp.get_default_memory_pool().free_bytes() == 0
    cp.cuda.Device().synchronize()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
        cp.cuda.Device(1).use()


KERNEL = r"""
extern "C" __global__ void scale(const float* x, float* y, float a, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i];
}
"""


def test_raw_kernel_runs_every_thread_of_the_launch(cp):
    kernel = cp.RawKernel(KERNEL, "scale")
    x = cp.arange(10, dtype=np.float32)
    y = cp.zeros(10, np.float32)
    kernel((3,), (4,), (x, y, np.float32(2), 10))
    np.testing.assert_array_equal(y.get(), 2 * np.arange(10))
    y = cp.zeros(10, np.float32)
    kernel((2,), (4,), (x, y, np.float32(2), 10))  # 8 threads: the last two elements stay 0
    np.testing.assert_array_equal(y.get(), np.r_[2 * np.arange(8), 0, 0])


@pytest.mark.parametrize("args, error, message", [
    (lambda cp: (cp.zeros(4), cp.zeros(4, np.float32), np.float32(1), 4), TypeError,
     "float64 array, the kernel reads f32"),
    (lambda cp: (cp.zeros(4, np.float32), cp.zeros(4, np.float32), 1.0, 4), TypeError,
     "argument 2 of kernel scale is float64"),  # a Python float is a double, as in CuPy
    (lambda cp: (cp.zeros(4, np.float32), cp.zeros(4, np.float32), np.float32(1)), TypeError,
     "takes 4 arguments, given 3"),
    (lambda cp: (np.zeros(4, np.float32), cp.zeros(4, np.float32), np.float32(1), 4), TypeError,
     "You are trying to pass a numpy.ndarray"),
    (lambda cp: (cp.zeros(8, np.float32)[::2], cp.zeros(4, np.float32), np.float32(1), 4),
     ValueError, "not C-contiguous"),
])
def test_raw_kernel_refuses_wrong_arguments(cp, args, error, message):
    kernel = cp.RawKernel(KERNEL, "scale")
    with pytest.raises(error, match=message):
        kernel((1,), (4,), args(cp))
    with pytest.raises(TypeError):
        kernel([1], [4], args(cp))  # grid and block are tuples in CuPy
    with pytest.raises(RuntimeError, match="CUDA_ERROR_INVALID_VALUE"):
        kernel((1,), (2048,), (cp.zeros(4, np.float32), cp.zeros(4, np.float32),
                               np.float32(1), 4))


def test_tinyseg_backend_uses_the_stand_in(monkeypatch):
    from tinyseg import backend
    cp = strict_cupy.install(monkeypatch)
    assert backend.cupy_available() and backend.get_backend("cupy") is cp
    a = backend.to_device(np.arange(3.0), "cuda")
    assert backend.get_array_module(a) is cp and backend.device_of(a) == "cuda"
    np.testing.assert_array_equal(backend.to_numpy(a), [0.0, 1.0, 2.0])


# tinyseg's command lines with --backend cupy, through tests/strict_cupy/run.py

TINY = ["--model", "tiny_resnet", "--output-stride", "8", "--batch-size", "2", "--crop", "48",
        "--workers", "1", "--log-every", "1", "--val-images", "2", "--val-every", "2",
        "--ckpt-every", "2", "--seed", "1"]


def run(*args, cupy=True):
    """python [tests/strict_cupy/run.py] SCRIPT ARGS in the repository; the CompletedProcess."""
    launcher = [os.path.join(REPO, "tests", "strict_cupy", "run.py")] if cupy else []
    return subprocess.run([sys.executable, *launcher, *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


@pytest.mark.parametrize("kernels", [[], ["--cuda-kernels"]], ids=["xp-ops", "cuda-kernels"])
def test_train_stop_resume_evaluate_on_cupy(tmp_path_factory, kernels):
    """train.py --backend cupy stopped at 2 of 4 iterations, resumed, then evaluated with
    pictures: each step succeeds, and the weights match a straight NumPy run of the reference
    ops (with --cuda-kernels the CUDA kernels run in the emulator)."""
    data = ensure_synthetic(str(tmp_path_factory.mktemp("synthetic")), num_train=12, num_val=3,
                            size=(64, 48), seed=3)
    out = tmp_path_factory.mktemp("cupy-run")
    first = run("train.py", "--backend", "cupy", *kernels, "--data-root", data, "--out", out,
                "--iters", 4, "--stop-at", 2, *TINY)
    assert first.returncode == 0, first.stdout + first.stderr
    assert load_checkpoint(str(out / "last.npz"))[2]["iteration"] == 2
    second = run("train.py", "--backend", "cupy", *kernels, "--out", out, "--resume")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed" in second.stdout
    assert load_checkpoint(str(out / "last.npz"))[2]["iteration"] == 4

    pictures, summary = tmp_path_factory.mktemp("pictures"), out / "summary.json"
    evaluated = run("evaluate.py", "--backend", "cupy", *kernels, "--checkpoint",
                    out / "last.npz", "--save-dir", pictures, "--json", summary)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "mIoU" in evaluated.stdout and len(os.listdir(pictures)) == 6  # 2 per val image
    assert json.loads(summary.read_text())["num_images"] == 3

    reference = tmp_path_factory.mktemp("numpy-run")
    straight = run("train.py", "--backend", "numpy", "--impl", "reference", "--data-root", data,
                   "--out", reference, "--iters", 4, "--projection", out / "projection.npz",
                   *TINY, cupy=False)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    ours, theirs = nn.load(out / "last.npz"), nn.load(reference / "last.npz")
    assert set(ours) == set(theirs)
    for key in theirs:
        if theirs[key].dtype.kind in "fiu":  # weights, BN statistics, T (not the meta text)
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-3, atol=1e-5, err_msg=key)

    # predict.py on the same run, on CuPy (issue 14's "both backends"): the label maps equal
    # the NumPy backend's, pixel for pixel
    photos = os.path.join(data, "VOCdevkit", "VOC2012", "JPEGImages")
    predictions = {}
    for backend in ("cupy", "numpy"):
        folder = tmp_path_factory.mktemp(f"predict-{backend}")
        done = run("predict.py", "--backend", backend, *(kernels if backend == "cupy" else []),
                   "--checkpoint", out / "last.npz", "--out", folder, "--save-scores",
                   "--scales", "0.75,1.0", "--flip", photos, cupy=backend == "cupy")
        assert done.returncode == 0, done.stdout + done.stderr
        predictions[backend] = {name: np.asarray(Image.open(folder / name))
                                for name in os.listdir(folder)
                                if name.endswith(".png") and not name.endswith("_overlay.png")}
        assert len([n for n in os.listdir(folder) if n.endswith("_scores.npy")]) == len(predictions[backend])
    assert len(predictions["cupy"]) == len(os.listdir(photos)) > 0
    for name, labels in predictions["numpy"].items():
        np.testing.assert_array_equal(predictions["cupy"][name], labels, err_msg=name)
