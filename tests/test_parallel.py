"""Slabs (tinyseg/fast/parallel.py): they cover every index once, run on the worker threads, and
a task's error reaches the caller."""
import threading

import numpy as np
import pytest

from tinyseg.fast import parallel


@pytest.mark.parametrize("length, bytes_per_item", [(1, 8), (7, 1 << 20), (1000, 4096), (5, 3)])
def test_slabs_cover_the_range_once(monkeypatch, length, bytes_per_item):
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    seen = np.zeros(length, int)
    for s in parallel.slabs(length, bytes_per_item):
        seen[s] += 1
    assert (seen == 1).all()


def test_slab_sizes(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    # 64 channels of 64 KB: a 1 MB cache holds 16 of them
    assert [s.stop - s.start for s in parallel.slabs(64, 64 * 1024)] == [16] * 4
    # 4 channels of 64 KB: 256 KB in all, split in two so that both threads work
    assert len(parallel.slabs(4, 64 * 1024)) == 2
    # small arrays and other backends: one slab, no hand-off to a thread
    assert parallel.slabs(100, 16) == [slice(0, 100)]
    assert parallel.slabs(64, 64 * 1024, xp=object()) == [slice(0, 64)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert len(parallel.slabs(4, 64 * 1024)) == 1


def test_num_threads_follows_the_blas_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.num_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")
    assert parallel.num_threads() == 5
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    assert parallel.num_threads() >= 1


def test_tasks_run_on_worker_threads_and_errors_reach_the_caller(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    names = {}
    parallel.run(lambda i: names.__setitem__(i, threading.current_thread().name), list(range(8)))
    # the caller works through the first run of neighbours, a worker through the second
    assert sorted(names) == list(range(8))
    assert {names[i] for i in range(4)} == {threading.current_thread().name}
    assert all(names[i].startswith("tinyseg-slab") for i in range(4, 8))

    def fail(i):
        if i == 3:
            raise ValueError("slab 3 failed")
    with pytest.raises(ValueError, match="slab 3 failed"):
        parallel.run(fail, list(range(8)))


def test_nested_runs_stay_on_the_worker(monkeypatch):
    """A task that itself splits its work runs the inner tasks inline: no thread waits for a
    pool that is busy with its own caller."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    out = np.zeros((4, 4))

    def outer(i):
        parallel.run(lambda j: out.__setitem__((i, j), i * 4 + j), list(range(4)))
    parallel.run(outer, list(range(4)))
    assert (out.ravel() == np.arange(16)).all()
