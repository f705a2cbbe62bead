/* tinyseg's CUDA kernels, loaded by tinyseg/fast/cuda_kernels.py; `real` is float or double
   (-Dreal=...). Each kernel is the twin of a reference op; see that file's text. */
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
