"""Every op test here runs with tiny slabs (tinyseg/parallel.py): each op then splits its
arrays into many slabs of channels or chunks, handed to worker threads, so a slab boundary
that loses or double-counts values fails the op's own tests."""
import pytest

from tinyseg import parallel


@pytest.fixture(autouse=True)
def tiny_slabs(monkeypatch):
    monkeypatch.setattr(parallel, "CACHE_BYTES", 64)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
