"""Check a backward pass against central finite differences, the way Chainer's check_backward does.

For a function y = f(x1, x2, ...) and a RANDOM upstream gradient g (never all ones: with
ones, d sum(softmax(x))/dx and d sum(batchnorm(x))/dx are exactly zero, so a backward that
returns zeros would pass), the analytic gradient of the scalar L = <f(x), g> is compared with

    dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

for EVERY element i of every differentiable input, in float64.
"""
import numpy as np

from .autograd import Tensor, no_grad
from .backend import get_array_module, to_numpy


def _outputs(fn, tensors):
    out = fn(*tensors)
    return out if isinstance(out, (tuple, list)) else (out,)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, seed=0, wrt=None):
    """Assert that fn's backward matches finite differences; return True when it does.

    fn:     takes Tensors, returns a Tensor or a tuple of Tensors.
    inputs: arrays (NumPy or CuPy). Floating arrays are cast to float64 and differentiated;
            integer arrays (labels) are passed as they are.
    wrt:    indices of the inputs to check (default: every floating input).
    Raises AssertionError naming the input, the worst element, and both values.
    """
    xp = get_array_module(*inputs)
    arrays = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in inputs]
    if wrt is None:
        wrt = [i for i, x in enumerate(arrays) if x.dtype.kind == "f"]
    tensors = [Tensor(x, requires_grad=(i in wrt)) for i, x in enumerate(arrays)]

    outputs = _outputs(fn, tensors)
    rng = np.random.default_rng(seed)
    upstream = [xp.asarray(rng.standard_normal(y.shape)) for y in outputs]

    def scalar_loss():
        with no_grad():
            ys = _outputs(fn, [Tensor(x) for x in arrays])
        return float(sum((y.data * g).sum() for y, g in zip(ys, upstream)))

    for y, g in zip(outputs, upstream):
        if y.requires_grad:
            y.backward(g, retain_graph=True)

    for i in wrt:
        x = arrays[i]
        analytic = tensors[i].grad
        analytic = np.zeros(x.shape) if analytic is None else to_numpy(analytic)
        numeric = np.zeros(x.shape)
        flat = x.reshape(-1)  # a view: writing into it perturbs arrays[i]
        for j in range(flat.size):
            original = float(flat[j])
            flat[j] = original + eps
            plus = scalar_loss()
            flat[j] = original - eps
            minus = scalar_loss()
            flat[j] = original
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if (error > 0).any():
            worst = tuple(int(k) for k in np.unravel_index(np.argmax(error), x.shape))
            raise AssertionError(
                f"gradient of input {i} (shape {x.shape}) is wrong at index {worst}: "
                f"backward gives {analytic[worst]:.8g}, finite differences {numeric[worst]:.8g} "
                f"({int((error > 0).sum())} of {x.size} elements off)")
    return True
