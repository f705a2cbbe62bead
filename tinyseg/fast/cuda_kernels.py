"""Hand-written CUDA kernels for the GPU's hot spots (their source: kernels.cu beside this
file), each the twin of a reference op of tinyseg/functional/; tinyseg/fast/cuda.py puts them
in the ops:

    kernel                 replaces (plain xp, tinyseg/functional/)
    im2col                 im2col: kH * kW strided slice copies
    col2im                 col2im: kH * kW strided slice additions
    depthwise_forward      conv with groups = C: one product per channel
    depthwise_grad_input   its adjoint in x
    depthwise_grad_weight  its adjoint in W
    batch_norm_forward     batch norm's elementwise passes (x_hat, y, the fused ReLU and its
    batch_norm_backward    mask; dx from the channel sums), functional/norm.py
    dupsample_cross_entropy  depth-to-space, log-softmax with temperature and NLL, each pixel
                           at once (tinyseg/functional/dupsample.py, DUpsampleCrossEntropy)

Each kernel gives one output element to one CUDA thread, in a grid-stride loop (a thread takes
index i, i + all threads, ...), and computes it from the inputs alone: a pixel of col2im or of
the depthwise input gradient GATHERS the taps that read it, instead of scattering into it, so
no two threads write the same element and no atomics are needed. In exchange each kernel
recomputes which taps see a pixel, the index arithmetic below.

They are compiled by CuPy (NVRTC) on first use, for float or double (`real`). The reference ops
run on CuPy as well; the kernels are used there only with tinyseg.config.cuda_kernels
(--cuda-kernels), until a session with a GPU has timed both (bench/step.py --backend cupy). Tests check every kernel
against its plain twin: on a GPU through CuPy, and on any machine through
tests/cuda_emulator.py, which compiles this same source with the C compiler and runs the
grid-stride loop with one thread.
"""
import functools
from pathlib import Path

import numpy as np

from ..backend import get_array_module

SOURCE = (Path(__file__).parent / "kernels.cu").read_text()  # compiled by NVRTC on first use


NAMES = ("im2col", "col2im", "depthwise_forward", "depthwise_grad_input", "depthwise_grad_weight",
         "batch_norm_forward", "batch_norm_backward", "dupsample_cross_entropy")
THREADS_PER_BLOCK = 256
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


@functools.lru_cache(maxsize=None)
def _compiled(xp, name, c_type):
    return xp.RawKernel(SOURCE, name, options=(f"-Dreal={c_type}",))


def cupy_launch(name, total, arrays, sizes):
    """Run kernel `name` on CuPy arrays with one thread per element of a `total`-sized output."""
    xp = get_array_module(arrays[0])
    kernel = _compiled(xp, name, C_TYPES[np.dtype(arrays[0].dtype)])
    blocks = max(1, min(-(-total // THREADS_PER_BLOCK), 65536))  # the loop covers the rest
    kernel((blocks,), (THREADS_PER_BLOCK,), tuple(arrays) + tuple(np.int64(s) for s in sizes))


def _geometry(x_shape, kernel, stride, padding, dilation, out_size):
    """The 14 sizes every kernel takes: N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW."""
    return tuple(x_shape) + tuple(kernel) + tuple(out_size) + tuple(stride) + tuple(padding) \
        + tuple(dilation)


def im2col(x, kernel, stride, padding, dilation, out_size, launch=cupy_launch):
    """x: (N, C, H, W) -> col: (N, C, kH, kW, H_out, W_out); the twin of conv.im2col."""
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    col = xp.empty(x.shape[:2] + tuple(kernel) + tuple(out_size), x.dtype)
    launch("im2col", col.size, (x, col), _geometry(x.shape, kernel, stride, padding, dilation,
                                                   out_size))
    return col


def col2im(col, input_size, stride, padding, dilation, launch=cupy_launch):
    """col: (N, C, kH, kW, H_out, W_out) -> (N, C, H, W); the twin of conv.col2im."""
    xp = get_array_module(col)
    col = xp.ascontiguousarray(col)
    n, c, kh, kw, oh, ow = col.shape
    x = xp.empty((n, c) + tuple(input_size), col.dtype)
    launch("col2im", x.size, (col, x), _geometry(x.shape, (kh, kw), stride, padding, dilation,
                                                 (oh, ow)))
    return x


def depthwise_forward(x, weight, stride, padding, dilation, out_size, launch=cupy_launch):
    """x: (N, C, H, W), weight: (C, 1, kH, kW) -> y: (N, C, H_out, W_out)."""
    xp = get_array_module(x)
    x, weight = xp.ascontiguousarray(x), xp.ascontiguousarray(weight)
    y = xp.empty(x.shape[:2] + tuple(out_size), x.dtype)
    launch("depthwise_forward", y.size, (x, weight, y),
           _geometry(x.shape, weight.shape[2:], stride, padding, dilation, out_size))
    return y


def depthwise_grad_input(gy, weight, x_shape, stride, padding, dilation, launch=cupy_launch):
    """gy: (N, C, H_out, W_out), weight: (C, 1, kH, kW) -> dx: x_shape = (N, C, H, W)."""
    xp = get_array_module(gy)
    gy, weight = xp.ascontiguousarray(gy), xp.ascontiguousarray(weight)
    gx = xp.empty(x_shape, gy.dtype)
    launch("depthwise_grad_input", gx.size, (gy, weight, gx),
           _geometry(x_shape, weight.shape[2:], stride, padding, dilation, gy.shape[2:]))
    return gx


def depthwise_grad_weight(gy, x, kernel, stride, padding, dilation, launch=cupy_launch):
    """gy: (N, C, H_out, W_out), x: (N, C, H, W) -> dW: (C, 1, kH, kW)."""
    xp = get_array_module(gy)
    gy, x = xp.ascontiguousarray(gy), xp.ascontiguousarray(x)
    gw = xp.empty((x.shape[1], 1) + tuple(kernel), gy.dtype)
    launch("depthwise_grad_weight", gw.size, (gy, x, gw),
           _geometry(x.shape, kernel, stride, padding, dilation, gy.shape[2:]))
    return gw


def dupsample_cross_entropy(v, mean, temperature, labels, ratio, ignore_index, launch=cupy_launch):
    """Per-pixel losses (N, H, W), dloss/dv (N h w, r r C) and dloss/dT per pixel (N, H, W) for
    v = F W^T (rows (n, y, x)), labels (N, H, W) with H <= h r and W <= w r; see the kernel."""
    xp = get_array_module(v)
    n, height, width = labels.shape
    rows, depth = v.shape
    num_classes = depth // (ratio * ratio)
    h, w = -(-height // ratio), -(-width // ratio)
    if rows != n * h * w:
        raise ValueError(f"dupsample_cross_entropy: v has {rows} rows, expected N h w = "
                         f"{n * h * w}")
    v, mean = xp.ascontiguousarray(v), xp.ascontiguousarray(mean, dtype=v.dtype)
    temperature = xp.ascontiguousarray(temperature, dtype=v.dtype).reshape(1)
    labels = xp.ascontiguousarray(labels, dtype=np.int64)
    losses = xp.empty(labels.shape, v.dtype)
    grad_v = xp.zeros_like(v)  # rows and offsets past the label map (padding) stay 0
    grad_t = xp.empty(labels.shape, v.dtype)
    launch("dupsample_cross_entropy", labels.size,
           (v, mean, temperature, labels, losses, grad_v, grad_t),
           (n, num_classes, h, w, ratio, height, width, ignore_index))
    return losses, grad_v, grad_t


def batch_norm_forward(x, mean, inv_std, gamma, beta, relu, keep, launch=cupy_launch):
    """x: (N, C, H, W) and (C,) statistics and affine -> y, x_hat (None unless keep) and the
    ReLU's mask (None unless keep and relu)."""
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    channels = [xp.ascontiguousarray(a, dtype=x.dtype) for a in (mean, inv_std, gamma, beta)]
    y = xp.empty_like(x)
    x_hat = xp.empty_like(x) if keep else y  # not written unless keep
    mask = xp.empty(x.shape, bool) if keep and relu else xp.empty(1, bool)
    launch("batch_norm_forward", x.size, (x, *channels, x_hat, y, mask),
           (x.size, x.shape[1], x.shape[2] * x.shape[3], int(relu), int(keep)))
    return y, (x_hat if keep else None), (mask if keep and relu else None)


def batch_norm_backward(gy, x_hat, mask, gamma, inv_std, gbeta, ggamma, training,
                        launch=cupy_launch):
    """dx: (N, C, H, W) from dy, the saved x_hat and mask (None without a ReLU) and the channel
    sums gbeta, ggamma of the (masked) dy."""
    xp = get_array_module(gy)
    gy = xp.ascontiguousarray(gy)
    channels = [xp.ascontiguousarray(a, dtype=gy.dtype) for a in (gamma, inv_std, gbeta, ggamma)]
    gx = xp.empty_like(gy)
    relu = mask is not None
    mask = mask if relu else xp.empty(1, bool)
    launch("batch_norm_backward", gy.size, (gy, x_hat, mask, *channels[:2], *channels[2:], gx),
           (gy.size, gy.shape[1], gy.shape[2] * gy.shape[3], gy.size // gy.shape[1], int(relu),
            int(training)))
    return gx
