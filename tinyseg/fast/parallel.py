"""Slabs: how tinyseg's CPU ops use the cache and every core.

NumPy runs one operation at a time over a whole array, on one core. An op that makes several
passes over a large activation (batch norm: mean, variance, normalise, scale, shift) streams
it through main memory on every pass, while the second core waits. But most ops treat the
channels of an (N, C, H, W) map independently, so they can run a few channels at a time:

    def task(c):                      # c: a slice of the channel axis
        y[:, c] = f(x[:, c])
    for_each_channel_slab(task, x)

On a slab of about CACHE_BYTES every pass after the first hits the cache, and different slabs
run on different cores at once: NumPy releases the GIL inside its loops, so Python threads
really run in parallel there (PyTorch's CPU kernels split their work over OpenMP threads the
same way). `for_each_chunk` does the same for elementwise ops over a flat index range.

A task must only write its own slab of the outputs. On CuPy arrays there is one slab, the
whole array: the GPU parallelises every op by itself.

Threads: `num_threads()`, the same count the BLAS uses (OMP_NUM_THREADS or
OPENBLAS_NUM_THREADS, else the cores this process may run on).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import get_array_module

CACHE_BYTES = 1024 * 1024  # a slab this size stays in a core's cache (measured: 256 KB to 4 MB)
MIN_PARALLEL_BYTES = 256 * 1024  # smaller arrays: one slab on the calling thread (no hand-off)

_pool = None  # the worker threads, made on first use
_pool_workers = 0
_worker = threading.local()  # .busy is True inside a worker: nested calls then run inline


def num_threads():
    """How many threads the slab ops use (the BLAS thread count, else every usable core)."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slabs(length, bytes_per_item, xp=np):
    """Split range(length) into slices of about CACHE_BYTES each, at least one per thread.

    CuPy, or a total under MIN_PARALLEL_BYTES: a single slice.
    """
    total = length * bytes_per_item
    if xp is not np or total < MIN_PARALLEL_BYTES or length <= 1:
        return [slice(0, length)]
    per_slab = max(1, CACHE_BYTES // max(1, bytes_per_item))
    per_thread = -(-length // num_threads())  # ceil: every thread gets a slab
    size = min(per_slab, per_thread)
    return [slice(start, min(start + size, length)) for start in range(0, length, size)]


def run(task, items):
    """Call task(item) for every item (slices of an array, or independent pieces of work such
    as parameters); the tasks write disjoint outputs, so their order does not matter.

    With more than one thread, the items are dealt out in as many runs of neighbours: this
    thread works through the first run while the workers take the others (one hand-off per
    thread, however small the slabs), and the first exception a task raised is raised here.
    """
    global _pool, _pool_workers
    threads = min(num_threads(), len(items))
    if threads <= 1 or getattr(_worker, "busy", False):
        for item in items:
            task(item)
        return
    if _pool is None or _pool_workers < threads - 1:
        _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="tinyseg-slab",
                                   initializer=_mark_worker)
        _pool_workers = threads - 1
    per_thread = -(-len(items) // threads)
    runs = [items[start:start + per_thread] for start in range(0, len(items), per_thread)]
    futures = [_pool.submit(_work_through, task, run_) for run_ in runs[1:]]
    _worker.busy = True  # a task that splits its own work runs it inline
    try:
        _work_through(task, runs[0])
    finally:
        _worker.busy = False
        for future in futures:
            future.result()  # waits, and re-raises a worker's exception here


def _work_through(task, items):
    for item in items:
        task(item)


def _mark_worker():
    _worker.busy = True


def channel_slabs(x):
    """Slices of the channel axis of x: (N, C, ...), each covering about CACHE_BYTES of x."""
    return slabs(x.shape[1], x.nbytes // max(1, x.shape[1]), get_array_module(x))


def for_each_channel_slab(task, x):
    """task(c) for slices c covering the channel axis of x: (N, C, ...)."""
    run(task, channel_slabs(x))


def for_each_chunk(task, x):
    """task(k) for slices k covering the flat index range of x (elementwise ops)."""
    run(task, slabs(x.size, x.itemsize, get_array_module(x)))
