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


def graph_bytes(loss):
    """Bytes of the arrays the graph behind `loss` holds for backward (leaves not counted)."""
    seen_functions, seen_buffers, total = set(), set(), 0
    stack = [loss.creator] if loss.creator is not None else []

    def count(array):
        nonlocal total
        base = array
        while getattr(base, "base", None) is not None:
            base = base.base
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
# ResNet-50 1,373 MB and Xception-65 1,843 MB, 0.66 and 0.64 of this estimate without the share.
PEAK_SHARE = 0.65
WARN_SHARE = 0.8        # warn above this share of the free memory


def available_bytes(xp):
    """Memory a step may still use: MemAvailable on the host (NumPy), free device memory (CuPy)."""
    if xp is np:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        raise OSError("no MemAvailable in /proc/meminfo")
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
        per_image = graph_bytes(model.loss(Tensor(images), masks)) / 2 * (crop / side) ** 2
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    parameters = sum(p.data.nbytes for p in model.parameters())
    return int(3 * parameters + batch_size * per_image * PEAK_SHARE)


def _size(nbytes):
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def check_step_memory(model, settings, xp, available=None):
    """Raise MemoryError (one line, with a batch that fits) when a step will not fit; print a
    warning when it is close. Returns (estimated bytes, available bytes)."""
    needed = estimate_step_bytes(model, settings["crop"], settings["batch_size"], xp)
    available = available_bytes(xp) if available is None else available
    where = "host memory" if xp is np else "GPU memory"
    if needed > available:
        per_image = (needed - 3 * sum(p.data.nbytes for p in model.parameters())) / settings["batch_size"]
        fits = int(max(available - 3 * sum(p.data.nbytes for p in model.parameters()), 0) // max(per_image, 1))
        advice = (f"--batch-size {fits} fits" if fits >= 1 else
                  f"not even one {settings['crop']}x{settings['crop']} crop fits: lower --crop")
        raise MemoryError(f"a training step needs about {_size(needed)} but only "
                          f"{_size(available)} of {where} is free: {advice} "
                          f"(batch {settings['batch_size']}, crop {settings['crop']})")
    if needed > WARN_SHARE * available:
        print(f"warning: a training step needs about {_size(needed)} of the "
              f"{_size(available)} of free {where}", flush=True)
    return needed, available
