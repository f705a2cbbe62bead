"""Opt-in cuDNN convolutions on the GPU (TINYSEG_CUDNN=1): NVIDIA's kernels through cupyx.cudnn.

tinyseg's own GPU convolution is the CPU's algorithm on CuPy arrays: im2col and one cuBLAS GEMM
(functional/conv.py), with the hand-written kernels of cuda_kernels.py when those are on.
cuDNN is what PyTorch calls. This switch swaps the three convolution computations of the
Conv2d op for cuDNN's, everything else unchanged (the argument checks, the autograd, batch
norm, the loss), so that bench/step.py can report the hand-written path and the cuDNN path
side by side:

    y  = conv(x, W)            cupyx.cudnn.convolution_forward
    dx = conv(x, W)^T dy       cupyx.cudnn.convolution_backward_data
    dW = dy (*) x              cupyx.cudnn.convolution_backward_filter

All three take NCHW arrays (cupyx makes its inputs C-contiguous itself) and write into a
C-contiguous output allocated here. Math: full float32, tensor cores off (tensor_core="never"); on A100
and later cuDNN may still pick TF32 kernels unless NVIDIA_TF32_OVERRIDE=0, which
bench/step.py sets so that both frameworks compute in float32. Algorithms: cuDNN's heuristic
choice (auto_tune=False, as torch.backends.cudnn.benchmark=False, PyTorch's default).

The plain path stays the reference: tests/test_cudnn.py compares the two on a GPU, and on any
machine runs these wrappers against a stand-in library with cupyx.cudnn's signatures.
"""
import os

import numpy as np

from .backend import get_array_module, require_cudnn


def enabled():
    """True when TINYSEG_CUDNN=1."""
    return os.environ.get("TINYSEG_CUDNN", "0") == "1"


def active(xp):
    """True when convolutions of arrays of module xp go to cuDNN: CuPy, and enabled()."""
    return xp is not np and enabled()


def library():
    """cupyx.cudnn, or a one-line BackendError saying how to get it."""
    return require_cudnn()


def _settings(stride, padding, dilation):
    """cupyx.cudnn's positional (pad, stride, dilation) tuples."""
    return tuple(padding), tuple(stride), tuple(dilation)


def conv2d(x, weight, out_size, stride, padding, dilation, groups, lib=None):
    """y: (N, C_out, H_out, W_out) = x: (N, C_in, H, W) correlated with weight (no bias)."""
    xp = get_array_module(x)
    y = xp.empty((x.shape[0], weight.shape[0]) + tuple(out_size), x.dtype)
    (lib or library()).convolution_forward(
        x, weight, None, y, *_settings(stride, padding, dilation), groups,
        auto_tune=False, tensor_core="never")
    return y


def conv2d_grad_input(gy, weight, x_shape, stride, padding, dilation, groups, lib=None):
    """dx: x_shape, the transposed convolution of dy with the same weight."""
    xp = get_array_module(gy)
    gx = xp.empty(tuple(x_shape), gy.dtype)
    (lib or library()).convolution_backward_data(
        weight, gy, None, gx, *_settings(stride, padding, dilation),
        groups, deterministic=False, auto_tune=False, tensor_core="never")
    return gx


def conv2d_grad_weight(gy, x, weight_shape, stride, padding, dilation, groups, lib=None):
    """dW: weight_shape, dy correlated with x over images and pixels."""
    xp = get_array_module(gy)
    gw = xp.empty(tuple(weight_shape), gy.dtype)
    (lib or library()).convolution_backward_filter(
        x, gy, gw, *_settings(stride, padding, dilation), groups,
        deterministic=False, auto_tune=False, tensor_core="never")
    return gw
