"""Will a training step fit in memory? Measured on one small step, scaled, checked before training.

A step holds the weights, their gradients and SGD's momentum (3 x the parameters), and, from
the forward pass until the backward pass has used them, the activations of every layer for
every image of the batch; the backward pass adds the gradients of those activations, about as
much again, while it frees the activations it has used. So

    step bytes ~ 3 x parameter bytes + batch x (activation bytes of one image) x PEAK_SHARE,

and the activations of one image grow with its pixels. `estimate_step_bytes` runs the forward
pass on two images of half the crop's side (a quarter of the pixels: quick; two, because batch
norm after a global pool needs two values) and adds up every array the graph keeps for the
backward pass (each op's saved arrays and its input tensors, each buffer counted once), then
scales to the batch and the crop. Free memory: MemAvailable (/proc/meminfo) on the host for
NumPy, the device's free memory plus CuPy's pool for CuPy.
"""
import numpy as np

from .autograd import Tensor


def _base(array):
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def graph_bytes(loss, exclude=()):
    """Bytes of the arrays the graph behind `loss` holds for backward: leaves, and the arrays in
    `exclude` (e.g. the model's weights, which a conv keeps a reference to), not counted."""
    seen_functions, seen_buffers, total = set(), {id(_base(a)) for a in exclude}, 0
    stack = [loss.creator] if loss.creator is not None else []

    def count(array):
        nonlocal total
        base = _base(array)
        if id(base) not in seen_buffers:
            seen_buffers.add(id(base))
            total += base.nbytes
    while stack:
        function = stack.pop()
        if id(function) in seen_functions:
            continue
        seen_functions.add(id(function))
        for name, value in vars(function).items():
            if name not in ("inputs", "outputs") and hasattr(value, "nbytes") and hasattr(value, "shape"):
                count(value)
        for tensor in function.inputs:
            if tensor.creator is not None:
                count(tensor.data)
                stack.append(tensor.creator)
    return total

# The arrays a graph holds are not all alive at once: backward frees each op's arrays when it is
# done with them. Measured peaks (bench/results/step-amd-epyc-2c.json, batch 2 at 256 x 256):
# ResNet-50 1,373 MB and Xception-65 1,843 MB (the whole process) against 486 + 957 MB and
# 657 + 1,330 MB (3 x parameters + the graph's arrays, DUpsampling decoder, OS 16): the graph's
# share at the peak is 0.93 and 0.89.
PEAK_SHARE = 0.95
WARN_SHARE = 0.8        # warn above this share of the free memory


def available_bytes(xp):
    """Memory a step may still use: MemAvailable on the host (NumPy), free device memory (CuPy);
    None where the system does not say (no /proc/meminfo: not Linux)."""
    if xp is np:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None
    free, _ = xp.cuda.Device().mem_info
    return int(free + xp.get_default_memory_pool().free_bytes())


def estimate_step_bytes(model, crop, batch_size, xp):
    """Bytes one training step of `batch_size` crops of crop x crop pixels needs (see above)."""
    side = max(crop // 2, model.output_stride)
    images = xp.asarray(np.zeros((2, 3, side, side), np.float32))
    masks = xp.asarray(np.zeros((2, side, side), np.int64))
    was_training = model.training
    state = {name: value.copy() for name, value in model.state_dict().items()}  # BN statistics
    model.train()
    try:
        weights = [p.data for p in model.parameters()] + list(model.state_dict().values())
        per_image = graph_bytes(model.loss(Tensor(images), masks), weights) / 2 * (crop / side) ** 2
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    parameters = sum(p.data.nbytes for p in model.parameters())
    return int(3 * parameters + batch_size * per_image * PEAK_SHARE)


def _size(nbytes):
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def check_step_memory(model, settings, xp, limit=None):
    """Raise MemoryError (one line, with a batch that fits) when a step will not fit in the free
    memory, or in `limit` bytes (--max-memory) if that is smaller; print a warning when it is
    close, or when the free memory cannot be read. Returns (estimated bytes, budget bytes)."""
    needed = estimate_step_bytes(model, settings["crop"], settings["batch_size"], xp)
    free = available_bytes(xp)
    where = "host memory" if xp is np else "GPU memory"
    if free is None and limit is None:
        print(f"warning: the free {where} cannot be read here; a step needs about "
              f"{_size(needed)} (--max-memory GIB checks against a budget)", flush=True)
        return needed, None
    budget = min(b for b in (free, limit) if b is not None)
    what = (f"--max-memory allows {_size(budget)}" if limit is not None and budget == limit
            else f"only {_size(budget)} of {where} is free")
    fixed = 3 * sum(p.data.nbytes for p in model.parameters())
    if needed > budget:
        per_image = (needed - fixed) / settings["batch_size"]
        fits = int(max(budget - fixed, 0) // max(per_image, 1))
        advice = (f"--batch-size {fits} fits" if fits >= 1 else
                  f"not even one {settings['crop']}x{settings['crop']} crop fits: lower --crop")
        raise MemoryError(f"a training step needs about {_size(needed)} but {what}: {advice} "
                          f"(batch {settings['batch_size']}, crop {settings['crop']})")
    if needed > WARN_SHARE * budget:
        print(f"warning: a training step needs about {_size(needed)}, and {what}", flush=True)
    return needed, budget
