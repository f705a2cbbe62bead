#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, as one call on a machine with CuPy and PyTorch (CUDA):
#   bash bench/gpu_check.sh [RESULTS_DIR]        (default bench/results; ~10 minutes on an H100)
# 1. the CuPy half of the test suite (every op test's cupy case, the CUDA kernels against
#    their plain twins, conv2d with TINYSEG_CUDA_KERNELS=1, the cuDNN path against the plain one);
# 2. bench/ops.py and bench/step.py on the GPU: plain CuPy ops, with the CUDA kernels, and with
#    the convolutions by cuDNN (TINYSEG_CUDNN=1, the opt-in path) on top of the kernels.
set -uo pipefail
cd "$(dirname "$0")/.."
results="${1:-bench/results}"
mkdir -p "$results"
python -c "from tinyseg.backend import require_cupy; require_cupy()" || exit 2
python -m pytest -q -k "cupy or gpu" tests 2>&1 | tail -15
python bench/ops.py --backend cupy --out "$results/ops-gpu.json"
python bench/step.py --backend cupy --out "$results/step-gpu.json"
TINYSEG_CUDA_KERNELS=1 python bench/step.py --backend cupy --no-memory \
    --out "$results/step-gpu-cuda-kernels.json"
TINYSEG_CUDNN=1 python bench/ops.py --backend cupy --out "$results/ops-gpu-cudnn.json"
TINYSEG_CUDA_KERNELS=1 TINYSEG_CUDNN=1 python bench/step.py --backend cupy --no-memory \
    --out "$results/step-gpu-cudnn.json"
