"""Every op test here runs twice, on the reference ops of tinyseg/functional/ and on their fast
twins of tinyseg/fast/ (the `impl` fixture), and the fast runs use tiny slabs
(tinyseg/fast/parallel.py): each op then splits its arrays into many slabs of channels or
chunks, handed to worker threads, so a slab boundary that loses or double-counts values fails
the op's own tests."""
import pytest

from tinyseg.config import using_config
from tinyseg.fast import parallel


@pytest.fixture(autouse=True, params=["reference", "fast"])
def impl(request, monkeypatch):
    monkeypatch.setattr(parallel, "CACHE_BYTES", 64)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    with using_config(impl=request.param):
        yield request.param
