"""Data-parallel training over several processes: MPI on CPUs (mpi4py), NCCL on GPUs.

    mpiexec -n 4 python train.py ...                      # 4 CPU processes, one machine
    mpiexec -n 8 -f hosts python train.py ...             # 2 machines (MPICH's hostfile)
    mpiexec -n 4 python train.py --backend cupy ...       # 4 GPUs: one process each, NCCL

Every process holds the whole model. Each global batch k is dealt to the processes in equal
shares (DataLoader's `part`), so a run sees the same samples whatever the number of
processes; each computes the gradients of its share, and `average_gradients` all-reduces
them in a few large buckets (flatten, sum, unflatten) in one fixed order, so every process
takes the same SGD step. The loss of each share is scaled to its part of the global mean
(`share_of_mean`), so the averaged gradient is the gradient of the global batch's loss.

Batch norm (the paper: statistics over 12 of 48 images per GPU) stays per process by
default; `--sync-bn` computes the statistics over all processes (functional.sync_batch_norm),
and `--bn-group` gives one process the per-process statistics of a larger run.

Rank 0 writes the logs, checkpoints and pictures and fits W (then broadcast). Communicators:
`SingleProcess` (no MPI), `MPICommunicator` (mpi4py; CuPy arrays go through the host) and
`NCCLCommunicator` (CuPy's NCCL bindings; its unique id travels over MPI).
"""
import os
import sys

import numpy as np

from .backend import BackendError, get_array_module, to_numpy

MPI_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_RANK")
BUCKET_BYTES = 32 * 2 ** 20  # gradients are all-reduced in buckets of about this size


class SingleProcess:
    """The communicator of a run without MPI: rank 0 of 1, every collective a no-op."""
    rank, size, name = 0, 1, "single process"

    def allreduce(self, array):
        return array

    def broadcast(self, value, root=0):
        return value

    def abort(self, code=1):
        sys.exit(code)


class MPICommunicator(SingleProcess):
    """Collectives over an mpi4py communicator (MPI.COMM_WORLD by default)."""
    name = "MPI"

    def __init__(self, comm=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def allreduce(self, array):
        """Sum `array` over the processes, in place (through the host for a CuPy array)."""
        if get_array_module(array) is np:
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
            return array
        host = np.ascontiguousarray(to_numpy(array))
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        array[...] = get_array_module(array).asarray(host)
        return array

    def broadcast(self, value, root=0):
        """A picklable value (e.g. W as NumPy arrays) from `root` to every process."""
        return self.comm.bcast(value, root=root)

    def abort(self, code=1):
        self.comm.Abort(code)

    def local_rank(self):
        """This process's index among the processes of its machine."""
        return self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()


class NCCLCommunicator:
    """All-reduce of CuPy arrays by NCCL between the GPUs; everything else (objects, barrier,
    abort) over the host communicator (MPI).

    Rank 0 makes NCCL's unique id and hands it out over the host communicator; process r
    uses GPU (r's index among the processes of its machine) modulo the machine's GPUs."""
    name = "NCCL"

    def __init__(self, host, cupy=None, nccl=None):
        if cupy is None:
            import cupy
        if nccl is None:
            from cupy.cuda import nccl
        self.host, self.cupy, self.nccl = host, cupy, nccl
        self.rank, self.size = host.rank, host.size
        cupy.cuda.Device(host.local_rank() % cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = host.broadcast(nccl.get_unique_id() if self.rank == 0 else None)
        self.communicator = nccl.NcclCommunicator(self.size, unique_id, self.rank)

    def allreduce(self, array):
        """Sum a CuPy array over the GPUs, in place, on the current stream."""
        types = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32,
                 np.dtype(np.float64): self.nccl.NCCL_FLOAT64,
                 np.dtype(np.int64): self.nccl.NCCL_INT64}
        if get_array_module(array) is np:  # host arrays (confusion matrices) go over MPI
            return self.host.allreduce(array)
        stream = self.cupy.cuda.get_current_stream()
        self.communicator.allReduce(array.data.ptr, array.data.ptr, array.size,
                                    types[np.dtype(array.dtype)], self.nccl.NCCL_SUM, stream.ptr)
        return array

    def broadcast(self, value, root=0):
        return self.host.broadcast(value, root)

    def abort(self, code=1):
        self.host.abort(code)


def launched_by_mpi():
    """True when this process was started by mpiexec/mpirun (MPICH, Open MPI, Intel MPI)."""
    return any(variable in os.environ for variable in MPI_VARIABLES)


def init(backend="numpy"):
    """The communicator for this process: SingleProcess unless started by mpiexec; then MPI
    on the CPU backend and NCCL on the GPU. One-line BackendError when the extra is missing."""
    if not launched_by_mpi():
        return SingleProcess()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise BackendError("started by mpiexec, but mpi4py is missing: pip install -e \".[mpi]\" "
                           "(mpi4py and an MPI library)") from None
    try:
        communicator = MPICommunicator()
    except (ImportError, RuntimeError, OSError) as error:
        raise BackendError(f"mpi4py cannot start MPI ({error}): install an MPI library, e.g. "
                           "pip install -e \".[mpi]\" (MPICH)") from None
    if communicator.size == 1 or backend == "numpy":
        return communicator
    try:
        from cupy.cuda import nccl  # noqa: F401
    except ImportError:
        raise BackendError("--backend cupy over several processes needs NCCL: pip install -e "
                           "\".[nccl]\" (nvidia-nccl-cu12, which CuPy loads)") from None
    return NCCLCommunicator(communicator)


def everywhere(error):
    """Mark an error that every process raises alike (a setting, a diverged loss), so the
    command line reports it once instead of stopping the processes by force."""
    error.collective = True
    return error


def on_rank_zero(comm, task):
    """task() on rank 0 (e.g. making the run folder, fitting W); its result on every process,
    or the error it raised, raised again on every process (everywhere)."""
    result = error = None
    if comm.rank == 0:
        try:
            result = task()
        except Exception as caught:  # noqa: BLE001 (raised again below, on every process)
            error = caught
    result, error = comm.broadcast((result, error))
    if error is not None:
        raise everywhere(error)
    return result


_stop = {"requested": False}


def request_stop(signum=None, frame=None):
    """Signal handler under mpiexec (Ctrl-C, SIGTERM): note the request; every process then
    stops at the same iteration (stop_requested is all-reduced with each step's loss), so that
    rank 0 can save, instead of one process stopping while another waits in a collective."""
    _stop["requested"] = True


def stop_requested():
    return _stop["requested"]


def share_batch_norm_statistics(model, comm):
    """Give every process rank 0's batch-norm running statistics (before validation: each
    process scores its part of the images as the checkpoint of rank 0 would)."""
    if comm.size == 1:
        return
    from .nn import BatchNorm2d
    norms = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    stats = comm.broadcast([(to_numpy(m.running_mean), to_numpy(m.running_var)) for m in norms]
                           if comm.rank == 0 else None)
    for norm, (mean, var) in zip(norms, stats):
        xp = get_array_module(norm.running_mean)
        norm.running_mean[...] = xp.asarray(mean)
        norm.running_var[...] = xp.asarray(var)


def buckets(parameters, bucket_bytes=BUCKET_BYTES):
    """The parameters in order, cut into runs of about bucket_bytes of gradient each."""
    groups, current, size = [], [], 0
    for p in parameters:
        current.append(p)
        size += p.data.nbytes
        if size >= bucket_bytes:
            groups.append(current)
            current, size = [], 0
    return groups + ([current] if current else [])


def average_gradients(parameters, comm, bucket_bytes=BUCKET_BYTES):
    """Replace every parameter's gradient by its mean over the processes, bucket by bucket:
    flatten the bucket's gradients into one array, all-reduce it, divide, unflatten. Every
    process runs the same network, so the same parameters have gradients everywhere."""
    if comm.size == 1:
        return
    for bucket in buckets([p for p in parameters if p.grad is not None], bucket_bytes):
        xp = get_array_module(bucket[0].data)
        flat = xp.concatenate([p.grad.ravel() for p in bucket])
        comm.allreduce(flat)
        flat /= comm.size
        offset = 0
        for p in bucket:
            p.grad = flat[offset:offset + p.data.size].reshape(p.data.shape)
            offset += p.data.size


def share_of_mean(masks, comm, ignore_index=255):
    """The factor that turns this process's mean loss over its labelled pixels into its share
    of the global batch's mean: local count * processes / global count. With it, the mean of
    the processes' gradients is the gradient of the one-process cross-entropy, void pixels or
    not (0 for a share with no labelled pixel). The regression loss (Eq. 4) averages over
    valid blocks instead, so there the processes' means are averaged, as PyTorch's DDP does:
    close to, but not exactly, the one-process step."""
    if comm.size == 1:
        return 1.0
    local = np.array([float((to_numpy(masks) != ignore_index).sum())])
    total = comm.allreduce(local.copy())[0]
    return float(local[0] * comm.size / total) if total > 0 else 1.0


def set_batch_norm(model, comm=None, group_size=None):
    """Make every BatchNorm2d of model compute its training statistics over all processes
    (comm, --sync-bn) or over groups of group_size images (--bn-group); None: the default,
    statistics over the batch each process sees."""
    from .nn import BatchNorm2d
    for module in model.modules():
        if isinstance(module, BatchNorm2d):
            module.comm = comm if comm is not None and comm.size > 1 else None
            module.group_size = group_size
