"""Shared fixtures: every op test runs on NumPy and on CuPy: the real CuPy where a GPU is
present, and elsewhere the strict NumPy-backed stand-in of tests/strict_cupy, installed for the
whole session as `cupy` and as tinyseg.backend's CuPy (so cupy_available() is true and every
GPU test runs through it)."""
import os

import numpy as np
import pytest

import strict_cupy
from tinyseg import backend
from tinyseg.backend import cupy_available, get_backend

BACKENDS = ["numpy", "cupy"]  # CuPy: real with a GPU, the stand-in without
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
_STAND_IN = pytest.MonkeyPatch()


def pytest_configure(config):
    if not cupy_available():
        strict_cupy.install(_STAND_IN)


def pytest_unconfigure(config):
    _STAND_IN.undo()


def pytest_report_header(config):
    if backend._cupy is strict_cupy.modules()["cupy"]:
        return f"cupy: the strict stand-in of tests/strict_cupy (CuPy {strict_cupy.CUPY_VERSION})"
    return f"cupy: CuPy {backend._cupy.__version__} on a GPU"


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module under test (CuPy, or the stand-in where no GPU is present)."""
    if request.param == "cupy" and not cupy_available():
        pytest.skip("neither CuPy with a GPU nor the strict stand-in is available")
    return get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def voc_masks_root():
    """The real VOC label maps of ../shared/data/voc-masks (the folder that holds VOCdevkit/)."""
    root = os.path.join(SHARED_DATA, "voc-masks")
    if not os.path.isdir(root):
        pytest.skip("../shared/data/voc-masks is not present")
    return root


@pytest.fixture
def voc_sample_root():
    """48 real VOC image + mask pairs in ../shared/data/voc-sample (holds VOCdevkit/)."""
    root = os.path.join(SHARED_DATA, "voc-sample")
    if not os.path.isdir(root):
        pytest.skip("../shared/data/voc-sample is not present")
    return root
