"""Shared fixtures: every op test runs on NumPy, and on CuPy too when a GPU is present."""
import os

import numpy as np
import pytest

from tinyseg.backend import cupy_available, get_backend

BACKENDS = ["numpy"] + (["cupy"] if cupy_available() else [])
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module under test; the CuPy case is skipped only where no GPU is present."""
    if request.param == "cupy" and not cupy_available():
        pytest.skip("CuPy with a GPU is not available on this machine")
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
