"""Stand-in communicators for tests: K ranks as K threads of one process, with the
collectives of tinyseg/distributed.py (sums in rank order, so results are deterministic), and
FakeNCCL, the calls tinyseg makes of cupy.cuda.nccl, for arrays of the strict CuPy stand-in."""
import ctypes
import threading
import uuid

import numpy as np

from tinyseg.backend import get_array_module


class ThreadGroup:
    """Shared state of K thread-ranks: `run(task)` calls task(comm) on K threads and returns
    their results in rank order (re-raising the first exception)."""

    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots = [None] * size

    def run(self, task):
        results, errors = [None] * self.size, []

        def work(rank):
            try:
                results[rank] = task(ThreadCommunicator(self, rank))
            except BaseException as error:  # noqa: BLE001 (re-raised below)
                errors.append(error)
                self.barrier.abort()
        threads = [threading.Thread(target=work, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


class ThreadCommunicator:
    name = "threads"

    def __init__(self, group, rank):
        self.group, self.rank, self.size = group, rank, group.size

    def _exchange(self, value):
        self.group.slots[self.rank] = value
        self.group.barrier.wait()
        values = list(self.group.slots)
        self.group.barrier.wait()
        return values

    def allreduce(self, array):
        xp = get_array_module(array)
        values = self._exchange(xp.array(array, copy=True))
        total = values[0].copy()
        for v in values[1:]:
            total += v
        array[...] = total
        return array

    def broadcast(self, value, root=0):
        return self._exchange(value)[root]

    def local_rank(self):
        return self.rank

    def abort(self, code=1):
        self.group.barrier.abort()
        raise RuntimeError(f"rank {self.rank} aborted")


def split(array, size):
    """The equal shares of a batch (first axis), as the DataLoader deals them."""
    return np.split(np.asarray(array), size)


class FakeNCCL:
    """cupy.cuda.nccl as tinyseg uses it (get_unique_id, NcclCommunicator(...).allReduce on
    device pointers), for thread-ranks on the strict stand-in, whose device pointers are host
    addresses: allReduce reads and writes the memory at the pointers, as NCCL does."""
    NCCL_INT64, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 4, 7, 8, 0
    C_TYPES = {NCCL_INT64: ctypes.c_int64, NCCL_FLOAT32: ctypes.c_float, NCCL_FLOAT64: ctypes.c_double}

    def __init__(self, size):
        self.group = ThreadGroup(size)
        self.calls = 0

    def get_unique_id(self):
        return (uuid.uuid4().int % 2 ** 63,)

    def NcclCommunicator(self, size, unique_id, rank):  # noqa: N802 (CuPy's name)
        assert size == self.group.size and len(unique_id) == 1
        return _FakeNcclComm(self, rank)


class _FakeNcclComm:
    def __init__(self, nccl, rank):
        self.nccl, self.rank = nccl, rank

    def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802 (CuPy's name)
        assert op == FakeNCCL.NCCL_SUM and stream == 0
        c_type = FakeNCCL.C_TYPES[dtype]
        values = np.ctypeslib.as_array((c_type * count).from_address(send)).copy()
        total = ThreadCommunicator(self.nccl.group, self.rank).allreduce(values)
        np.ctypeslib.as_array((c_type * count).from_address(recv))[...] = total
        self.nccl.calls += 1
