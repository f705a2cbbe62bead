#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, on a machine with CuPy and PyTorch (CUDA), in two stages
# that each fit one 10-minute call of the device tool:
#   bash bench/gpu_check.sh tests [RESULTS_DIR]   the CuPy half of the test suite: every op
#        test's cupy case (reference and fast), the CUDA kernels and the GPU twins against the
#        reference ops, the model's loss with --cuda-kernels (log: RESULTS_DIR/gpu-tests.log)
#   bash bench/gpu_check.sh bench [RESULTS_DIR]   bench/ops.py and bench/step.py on the GPU: the
#        reference ops on CuPy (step with memory), then --quick runs with the CUDA kernels
#   bash bench/gpu_check.sh all [RESULTS_DIR]     both, one after the other
# RESULTS_DIR defaults to bench/results (on the device tool: "$OUT", so that the files come back).
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:-all}"
results="${2:-bench/results}"
mkdir -p "$results"
case "$stage" in
    tests|bench|all) ;;
    *) echo "usage: bash bench/gpu_check.sh tests|bench|all [RESULTS_DIR]" >&2; exit 2 ;;
esac
python - <<'CHECK' || exit 2
import sys
from tinyseg.backend import BackendError, require_cupy
try:
    require_cupy()
except BackendError as error:
    sys.exit(f"gpu_check: {error}")
CHECK

run_tests() {
    python -m pytest -q -k "cupy or gpu" tests 2>&1 | tee "$results/gpu-tests.log" | tail -15
}

run_bench() {
    python bench/ops.py --backend cupy --out "$results/ops-gpu.json"
    python bench/step.py --backend cupy --out "$results/step-gpu.json"
    python bench/ops.py --backend cupy --cuda-kernels --out "$results/ops-gpu-cuda-kernels.json"
    python bench/step.py --backend cupy --cuda-kernels --quick --no-memory \
        --out "$results/step-gpu-cuda-kernels.json"
}

case "$stage" in
    tests) run_tests ;;
    bench) run_bench ;;
    all) run_tests; run_bench ;;
esac
