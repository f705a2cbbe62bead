"""tinyseg: a small, readable deep-learning framework on NumPy/CuPy, and DUpsampling on it.

Read it in this order: backend.py -> autograd.py -> functional/ -> nn/ -> optim.py ->
models/ -> pca.py -> data/ -> train.py.
"""
from .autograd import Function, Tensor, as_tensor, is_grad_enabled, no_grad
from .backend import BackendError, get_array_module, get_backend
from . import functional, nn, optim

__all__ = ["Function", "Tensor", "as_tensor", "no_grad", "is_grad_enabled", "BackendError",
           "get_array_module", "get_backend", "functional", "nn", "optim"]
__version__ = "0.1.0"
