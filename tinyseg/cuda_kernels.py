"""Hand-written CUDA kernels for the GPU's hot spots, each the twin of a plain-xp op that stays
the reference (and the CPU path):

    kernel                 replaces (plain xp, tinyseg/functional/)
    im2col                 im2col: kH * kW strided slice copies
    col2im                 col2im: kH * kW strided slice additions
    depthwise_forward      the depthwise branch (depthwise.py): one product per channel
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

They are compiled by CuPy (NVRTC) on first use, for float or double (`real`). The plain-xp ops
run on CuPy as well; the kernels are used there only when TINYSEG_CUDA_KERNELS=1, until a
session with a GPU has timed both (bench/step.py --backend cupy). Tests check every kernel
against its plain twin: on a GPU through CuPy, and on any machine through
tests/cuda_emulator.py, which compiles this same source with the C compiler and runs the
grid-stride loop with one thread.
"""
import functools
import os

import numpy as np

from .backend import get_array_module

SOURCE = r"""
#define GRID_STRIDE_LOOP(index, total) \
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < (total); \
         index += (long long)blockDim.x * gridDim.x)

/* The sizes every convolution kernel takes: input N x C x H x W, kernel KH x KW, output
   OH x OW, stride, padding and dilation. */
#define CONV_SIZES long long N, long long C, long long H, long long W, long long KH, \
    long long KW, long long OH, long long OW, long long SH, long long SW, long long PH, \
    long long PW, long long DH, long long DW

/* col[n, c, i, j, p, q] = x[n, c, p sh + i dh - ph, q sw + j dw - pw], 0 outside the image */
extern "C" __global__ void im2col(const real* x, real* col, CONV_SIZES) {
    GRID_STRIDE_LOOP(index, N * C * KH * KW * OH * OW) {
        long long q = index % OW, rest = index / OW;
        long long p = rest % OH; rest /= OH;
        long long j = rest % KW; rest /= KW;
        long long i = rest % KH; rest /= KH;             /* rest = n C + c */
        long long row = p * SH + i * DH - PH, column = q * SW + j * DW - PW;
        int inside = row >= 0 && row < H && column >= 0 && column < W;
        col[index] = inside ? x[(rest * H + row) * W + column] : (real)0;
    }
}

/* The taps (i, j) and output pixels (p, q) that read input pixel (h, w): p sh + i dh - ph = h
   and q sw + j dw - pw = w, with p, q inside the output. */
#define FOR_EACH_TAP_READING(h, w, BODY) \
    for (long long i = 0; i < KH; ++i) { \
        long long r = (h) + PH - i * DH; \
        if (r < 0 || r % SH != 0 || r / SH >= OH) continue; \
        long long p = r / SH; \
        for (long long j = 0; j < KW; ++j) { \
            long long s = (w) + PW - j * DW; \
            if (s < 0 || s % SW != 0 || s / SW >= OW) continue; \
            long long q = s / SW; \
            BODY \
        } \
    }

/* x[n, c, h, w] = sum of col[n, c, i, j, p, q] over the taps that read (h, w) */
extern "C" __global__ void col2im(const real* col, real* x, CONV_SIZES) {
    GRID_STRIDE_LOOP(index, N * C * H * W) {
        long long w = index % W, rest = index / W;
        long long h = rest % H; rest /= H;               /* rest = n C + c */
        real sum = 0;
        FOR_EACH_TAP_READING(h, w, sum += col[(((rest * KH + i) * KW + j) * OH + p) * OW + q];)
        x[index] = sum;
    }
}

/* y[n, c, p, q] = sum over taps of weight[c, i, j] x[n, c, p sh + i dh - ph, q sw + j dw - pw] */
extern "C" __global__ void depthwise_forward(const real* x, const real* weight, real* y,
        CONV_SIZES) {
    GRID_STRIDE_LOOP(index, N * C * OH * OW) {
        long long q = index % OW, rest = index / OW;
        long long p = rest % OH; rest /= OH;             /* rest = n C + c */
        long long c = rest % C;
        real sum = 0;
        for (long long i = 0; i < KH; ++i)
            for (long long j = 0; j < KW; ++j) {
                long long row = p * SH + i * DH - PH, column = q * SW + j * DW - PW;
                if (row >= 0 && row < H && column >= 0 && column < W)
                    sum += weight[(c * KH + i) * KW + j] * x[(rest * H + row) * W + column];
            }
        y[index] = sum;
    }
}

/* dx[n, c, h, w] = sum over the taps reading (h, w) of weight[c, i, j] dy[n, c, p, q] */
extern "C" __global__ void depthwise_grad_input(const real* gy, const real* weight, real* gx,
        CONV_SIZES) {
    GRID_STRIDE_LOOP(index, N * C * H * W) {
        long long w = index % W, rest = index / W;
        long long h = rest % H; rest /= H;               /* rest = n C + c */
        long long c = rest % C;
        real sum = 0;
        FOR_EACH_TAP_READING(h, w,
            sum += weight[(c * KH + i) * KW + j] * gy[(rest * OH + p) * OW + q];)
        gx[index] = sum;
    }
}

/* dW[c, i, j] = sum over (n, p, q) of dy[n, c, p, q] x[n, c, p sh + i dh - ph, q sw + j dw - pw] */
extern "C" __global__ void depthwise_grad_weight(const real* gy, const real* x, real* gw,
        CONV_SIZES) {
    GRID_STRIDE_LOOP(index, C * KH * KW) {
        long long j = index % KW, rest = index / KW;
        long long i = rest % KH;
        long long c = rest / KH;
        real sum = 0;
        for (long long n = 0; n < N; ++n)
            for (long long p = 0; p < OH; ++p) {
                long long row = p * SH + i * DH - PH;
                if (row < 0 || row >= H) continue;
                for (long long q = 0; q < OW; ++q) {
                    long long column = q * SW + j * DW - PW;
                    if (column < 0 || column >= W) continue;
                    sum += gy[((n * C + c) * OH + p) * OW + q]
                         * x[((n * C + c) * H + row) * W + column];
                }
            }
        gw[index] = sum;
    }
}

/* Batch norm's elementwise forward, for element (n, c, p) of x: (N, C, H W), given the channel
   statistics: x_hat = (x - mean[c]) inv_std[c], y = gamma[c] x_hat + beta[c], then with relu
   y = max(y, 0) and mask = y > 0. x_hat and mask are written only when keep is 1. */
extern "C" __global__ void batch_norm_forward(const real* x, const real* mean,
        const real* inv_std, const real* gamma, const real* beta, real* x_hat, real* y,
        bool* mask, long long total, long long C, long long HW, long long relu, long long keep) {
    GRID_STRIDE_LOOP(index, total) {
        long long c = index / HW % C;
        real normalised = (x[index] - mean[c]) * inv_std[c];
        real out = gamma[c] * normalised + beta[c];
        if (relu) out = out > 0 ? out : (real)0;
        y[index] = out;
        if (keep) {
            x_hat[index] = normalised;
            if (relu) mask[index] = out > 0;
        }
    }
}

/* Batch norm's dx, given the channel sums gbeta = sum g and ggamma = sum g x_hat of
   g = dL/dy (times the ReLU's mask with relu) over the M = N H W values of a channel:
   training  dx = gamma inv_std (g - gbeta / M - x_hat ggamma / M)
   eval      dx = gamma inv_std g */
extern "C" __global__ void batch_norm_backward(const real* gy, const real* x_hat,
        const bool* mask, const real* gamma, const real* inv_std, const real* gbeta,
        const real* ggamma, real* gx, long long total, long long C, long long HW, long long M,
        long long relu, long long training) {
    GRID_STRIDE_LOOP(index, total) {
        long long c = index / HW % C;
        real g = (relu && !mask[index]) ? (real)0 : gy[index];
        if (training) g = g - gbeta[c] / M - x_hat[index] * ggamma[c] / M;
        gx[index] = gamma[c] * inv_std[c] * g;
    }
}

/* DUpsampling's Eqs. (5) + (6) + cross-entropy for one pixel (n, Y, X) of the label map. Its
   class scores are read in place from the 1x1 conv's output v: (N h w, r r C), as
   depth-to-space would move them: z_c = v[row, (i r + j) C + c] + mean[(i r + j) C + c] with
   row = (n h + Y / r) w + X / r, i = Y % r, j = X % r. With u = z / T and p = softmax(u):
       loss = logsumexp(u) - u[label]
       dloss/dv_c = (p_c - [c == label]) / T,   dloss/dT = -sum_c (p_c - [c == label]) u_c / T
   A void pixel (label == ignore) gives 0 for all three. */
extern "C" __global__ void dupsample_cross_entropy(const real* v, const real* mean,
        const real* temperature, const long long* labels, real* losses, real* grad_v,
        real* grad_t, long long N, long long C, long long h, long long w, long long r,
        long long H, long long W, long long ignore) {
    GRID_STRIDE_LOOP(index, N * H * W) {
        long long X = index % W, rest = index / W;
        long long Y = rest % H, n = rest / H;
        long long offset = ((Y % r) * r + X % r) * C;
        long long start = ((n * h + Y / r) * w + X / r) * r * r * C + offset;
        long long label = labels[index];
        real T = temperature[0];
        if (label == ignore) {
            for (long long c = 0; c < C; ++c) grad_v[start + c] = 0;
            losses[index] = 0;
            grad_t[index] = 0;
            continue;
        }
        real top = (v[start] + mean[offset]) / T;
        for (long long c = 1; c < C; ++c) {
            real u = (v[start + c] + mean[offset + c]) / T;
            top = u > top ? u : top;
        }
        real total = 0;
        for (long long c = 0; c < C; ++c) total += exp((v[start + c] + mean[offset + c]) / T - top);
        real log_sum = top + log(total);
        real dT = 0;
        for (long long c = 0; c < C; ++c) {
            real u = (v[start + c] + mean[offset + c]) / T;
            real d = exp(u - log_sum) - (c == label ? (real)1 : (real)0);
            grad_v[start + c] = d / T;
            dT -= d * u / T;
        }
        losses[index] = log_sum - (v[start + label] + mean[offset + label]) / T;
        grad_t[index] = dT;
    }
}
"""

NAMES = ("im2col", "col2im", "depthwise_forward", "depthwise_grad_input", "depthwise_grad_weight",
         "batch_norm_forward", "batch_norm_backward", "dupsample_cross_entropy")
THREADS_PER_BLOCK = 256
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def enabled():
    """True when the CuPy ops should call these kernels (TINYSEG_CUDA_KERNELS=1)."""
    return os.environ.get("TINYSEG_CUDA_KERNELS", "0") == "1"


def active(xp):
    """True when ops on arrays of module xp use these kernels: CuPy, and enabled()."""
    return xp is not np and enabled()


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
