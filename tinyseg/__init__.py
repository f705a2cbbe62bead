"""tinyseg: a small, readable deep-learning framework on NumPy/CuPy, and DUpsampling on it.

Read it in this order (README.md has the table; docs/tour.md follows one training step):
engine (backend.py, autograd.py) -> reference ops (functional/) -> nn/, optim.py -> models/ ->
DUpsampling and PCA (blocks.py, pca.py) -> data/ -> training (settings.py, run.py, training.py,
train.py) -> the fast twins (config.py, dispatch.py, fast/).
"""
import os

# After every matrix product OpenBLAS's idle threads spin for about 0.1 s (2^28 cycles)
# before they sleep, taking a core from the slab threads of tinyseg/fast/parallel.py that run
# next; let them sleep at once (2^4 cycles). OpenBLAS reads this when NumPy first loads, so
# it counts where tinyseg is imported before NumPy (train.py, evaluate.py and bench/ do so).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# Under mpiexec several processes share a machine's cores: unless told otherwise, each takes
# its share of them for the BLAS and the slab threads (MPICH and Open MPI say how many
# processes run on this machine), instead of every process starting a thread per core.
_local = os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
if _local and _local.isdigit() and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _threads = str(max(1, _cores // int(_local)))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads)
    os.environ["OMP_NUM_THREADS"] = _threads

from .autograd import Function, Tensor, as_tensor, is_grad_enabled, no_grad
from .backend import BackendError, get_array_module, get_backend
from . import functional, nn, optim

__all__ = ["Function", "Tensor", "as_tensor", "no_grad", "is_grad_enabled", "BackendError",
           "get_array_module", "get_backend", "functional", "nn", "optim"]
__version__ = "0.1.0"
