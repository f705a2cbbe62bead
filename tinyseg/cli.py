"""What the command lines (train.py, evaluate.py, predict.py) share: the backend options and
the one function that sets the backend up from them.

    --backend numpy|cupy     where the arrays live (tinyseg/backend.py)
    --impl fast|reference    which version of the ops runs (tinyseg/config.py)
    --cuda-kernels           on the GPU, the hand-written CUDA kernels (tinyseg/config.py)
"""
import numpy as np

from . import config
from .backend import get_backend, keep_freed_memory


def add_backend_arguments(parser):
    """--backend, --impl and --cuda-kernels on a command line."""
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                        help="CPU or GPU arrays")
    config.add_arguments(parser)


def setup_backend(options):
    """The array module for options.backend, with tinyseg.config set from options.impl and
    options.cuda_kernels (the parsed command line, or a run's TrainSettings). Raises
    BackendError, in one line, when the backend cannot run here."""
    xp = get_backend(options.backend)
    config.apply_arguments(options)
    if xp is np:
        keep_freed_memory()  # steps reuse freed memory instead of faulting in new pages
    return xp
