"""Module and Parameter with PyTorch's conventions.

A Module owns three kinds of state, found by walking its attributes:
* parameters: `Parameter` tensors trained by the optimizer (`parameters()`);
* buffers: plain arrays that are state but not trained, e.g. batch norm's running statistics
  or DUpsampling's fixed W (`register_buffer`);
* submodules: other Modules, whose state is named with a dotted prefix ("layer1.0.conv1.weight").
`state_dict()` gathers parameters and buffers by those names; `load_state_dict()` puts them back
and, when `strict`, names every missing, unexpected or mis-shaped key. `train()`/`eval()` set the
`training` flag of the module and all its submodules; layers pass it to the functional ops.
"""
import os
from collections import OrderedDict

import numpy as np

from ..autograd import Tensor
from ..backend import device_name, get_array_module, to_device, to_numpy


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True by default)."""

    def __init__(self, data, requires_grad=True, name=None):
        super().__init__(data, requires_grad=requires_grad, name=name)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class StateDictError(KeyError):
    """load_state_dict found keys that do not match the module; the message lists them."""

    def __str__(self):
        return self.args[0]


class Module:
    """Base class of every layer and network: subclasses set attributes and define forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffer_names", ()):
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """Keep `array` as named state (saved and moved with the module) that is not trained."""
        self.__dict__.setdefault("_buffer_names", set()).add(name)
        setattr(self, name, array)

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    # ------------------------------------------------------------------ walking the tree
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                yield (f"{module_name}.{name}" if module_name else name), b

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------------ modes and devices
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move every parameter and buffer to "cpu" or "cuda", in place; returns self."""
        for m in self.modules():
            for p in m._parameters.values():
                p.data = to_device(p.data, device)
                p.grad = None if p.grad is None else to_device(p.grad, device)
            for name, b in list(m._buffers.items()):
                setattr(m, name, to_device(b, device))
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Ordered {dotted name: array} of every parameter and buffer (arrays are not copied)."""
        state = OrderedDict((name, p.data) for name, p in self.named_parameters())
        state.update(self.named_buffers())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from `state` into this module's parameters and buffers.

        With strict=True every key must match by name and shape; otherwise a StateDictError
        names the missing, unexpected and mis-shaped keys (all of them, not just the first).
        Returns the (missing, unexpected) key lists.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        misshaped = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {tuple(own[k].shape)}"
                     for k in own if k in state and tuple(np.shape(state[k])) != tuple(own[k].shape)]
        if misshaped or (strict and (missing or unexpected)):
            parts = []
            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                ("mis-shaped", misshaped)):
                if keys:
                    shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                    parts.append(f"{len(keys)} {label} key(s): {shown}")
            raise StateDictError(f"state dict does not match {type(self).__name__}: " + "; ".join(parts))
        targets = dict(self._state_targets())
        for key, value in state.items():
            if key in targets:
                module, name, is_param = targets[key]
                current = own[key]
                xp = get_array_module(current)
                array = xp.asarray(to_device(value, device_name(xp)), dtype=current.dtype)
                if is_param:
                    module._parameters[name].data = array.copy()
                else:
                    setattr(module, name, array.copy())
        return missing, unexpected

    def _state_targets(self):
        for module_name, module in self.named_modules():
            dot = f"{module_name}." if module_name else ""
            for name in module._parameters:
                yield dot + name, (module, name, True)
            for name in module._buffers:
                yield dot + name, (module, name, False)

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + ")" if self._modules else f"{type(self).__name__}()"


class ModuleList(Module):
    """A list of Modules whose state is registered (named "0", "1", ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]


class Sequential(ModuleList):
    """Modules applied one after another: Sequential(conv, bn, relu)(x) = relu(bn(conv(x)))."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


def save(state, path):
    """Write a {name: array} dict to an .npz file atomically (temp file, then rename)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **{k: to_numpy(v) for k, v in state.items()})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path):
    """Read a {name: array} dict from an .npz file written by `save`; clear errors if it is not one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return OrderedDict((k, archive[k]) for k in archive.files)
    except Exception as error:
        raise ValueError(f"{path}: not a readable .npz state file ({error})") from None
