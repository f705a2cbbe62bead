"""SGD with momentum and weight decay (PyTorch semantics) and the "poly" learning-rate policy."""
import numpy as np

from .fast import parallel
from .backend import get_array_module


class SGD:
    """Stochastic gradient descent, step by step exactly as torch.optim.SGD (dampening 0):

        g   = grad + weight_decay * p
        buf = g                      on the first step,
        buf = momentum * buf + g     afterwards,
        p   = p - lr * buf

    params: an iterable of Parameters, or of dicts {"params": [...], "weight_decay": ..., ...}
    (param groups) so that some parameters, e.g. the temperature T, get no weight decay.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        for group in params:
            group = dict(group)
            group["params"] = [p for p in group["params"] if p.requires_grad]
            group.setdefault("lr", lr)
            group.setdefault("momentum", momentum)
            group.setdefault("weight_decay", weight_decay)
            group["initial_lr"] = group["lr"]
            self.param_groups.append(group)
        self.momentum_buffers = {}  # id(parameter) -> velocity array

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        """One update of every parameter that has a gradient.

        The update is elementwise, so it can run piece by piece: on the CPU every parameter
        is cut into cache-sized chunks, spread over the cores (tinyseg/fast/parallel.py), and each
        chunk goes through all the steps of `_update` while it is in the cache.
        """
        pieces = []
        for group in self.param_groups:
            settings = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = get_array_module(p.data)
                if group["momentum"] and id(p) not in self.momentum_buffers:
                    # zeros: the first step's momentum * 0 + g is exactly torch's buf = g
                    self.momentum_buffers[id(p)] = xp.zeros_like(p.data)
                arrays = (p.data, p.grad, self.momentum_buffers.get(id(p), p.data))
                if all(a.flags.c_contiguous for a in arrays):
                    chunks = parallel.slabs(p.data.size, p.data.itemsize, xp)
                else:  # a chunk of the flat view needs contiguous arrays: do it whole
                    chunks = [None]
                pieces += [(p, chunk, settings) for chunk in chunks]
        if pieces and get_array_module(pieces[0][0].data) is np:
            parallel.run(self._update, pieces)
        else:  # CuPy: the GPU runs each update in parallel by itself
            for piece in pieces:
                self._update(piece)

    def _update(self, piece):
        """p -= lr * buf, with buf = momentum * buf + (grad + weight_decay * p), on one chunk
        of the flat arrays (chunk None: the whole arrays)."""
        p, chunk, (lr, momentum, decay) = piece

        def part(a):
            return a if chunk is None else a.reshape(-1)[chunk]
        xp = get_array_module(p.data)
        data = part(p.data)
        g = grad = part(p.grad)
        if decay:
            g = xp.multiply(data, decay, dtype=data.dtype)
            g += grad  # grad + decay * p
        if momentum:
            buf = part(self.momentum_buffers[id(p)])
            buf *= momentum
            buf += g
            g = buf
        data -= xp.multiply(g, lr, dtype=data.dtype)

    def state_dict(self):
        """Momentum buffers in parameter order (arrays), for checkpoints that resume exactly."""
        state = {}
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                buf = self.momentum_buffers.get(id(p))
                if buf is not None:
                    state[f"momentum.{index}"] = buf
                index += 1
        return state

    def load_state_dict(self, state):
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                buf = state.get(f"momentum.{index}")
                if buf is not None:
                    xp = get_array_module(p.data)
                    self.momentum_buffers[id(p)] = xp.asarray(buf, dtype=p.data.dtype).copy()
                index += 1


def poly_lr(base_lr, iteration, max_iterations, power=0.9):
    """The "poly" policy of DeepLab and the paper: base_lr * (1 - iteration / max_iterations)^power."""
    return base_lr * (1.0 - min(iteration, max_iterations) / max_iterations) ** power


class PolyLR:
    """Sets every param group's lr to poly_lr(initial_lr, iteration, max_iterations) on step(iteration)."""

    def __init__(self, optimizer, max_iterations, power=0.9):
        self.optimizer, self.max_iterations, self.power = optimizer, max_iterations, power

    def step(self, iteration):
        for group in self.optimizer.param_groups:
            group["lr"] = poly_lr(group["initial_lr"], iteration, self.max_iterations, self.power)
        return self.optimizer.param_groups[0]["lr"]
