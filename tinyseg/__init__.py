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

from .autograd import Function, Tensor, as_tensor, is_grad_enabled, no_grad
from .backend import BackendError, get_array_module, get_backend
from . import functional, nn, optim

__all__ = ["Function", "Tensor", "as_tensor", "no_grad", "is_grad_enabled", "BackendError",
           "get_array_module", "get_backend", "functional", "nn", "optim"]
__version__ = "0.1.0"
