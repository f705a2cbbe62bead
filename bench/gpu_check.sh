#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, on a machine with CuPy and PyTorch (CUDA), in two stages
# that each fit one 10-minute call of the device tool:
#   bash bench/gpu_check.sh tests [RESULTS_DIR]   the CuPy half of the test suite: every op
#        test's cupy case (reference and fast), the CUDA kernels and the GPU twins against the
#        reference ops, the model's loss with --cuda-kernels (log: RESULTS_DIR/gpu-tests.log)
#   bash bench/gpu_check.sh bench [RESULTS_DIR]   bench/ops.py and bench/step.py on the GPU: the
#        reference ops on CuPy (step with memory), then --quick runs with the CUDA kernels
#   bash bench/gpu_check.sh mpi [RESULTS_DIR]     2 processes on the GPU(s) through NCCL (needs
#        the mpi and nccl extras; NCCL may refuse two ranks on one GPU): a short train.py run,
#        then bench/scaling.py --backend cupy (log: RESULTS_DIR/gpu-mpi.log)
#   bash bench/gpu_check.sh all [RESULTS_DIR]     tests and bench, one after the other
# RESULTS_DIR defaults to bench/results (on the device tool: "$OUT", so that the files come back).
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:-all}"
results="${2:-bench/results}"
mkdir -p "$results"
case "$stage" in
    tests|bench|mpi|all) ;;
    *) echo "usage: bash bench/gpu_check.sh tests|bench|mpi|all [RESULTS_DIR]" >&2; exit 2 ;;
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

run_mpi() {
    {
        mpiexec -n 2 python train.py --backend cupy --iters 20 --batch-size 8 --crop 96 \
            --log-every 5 --val-every 10 --out "$results/mpi-run" --overwrite
        python bench/scaling.py --backend cupy --quick --processes 1 2 \
            --out "$results/scaling-gpu-quick.json"
    } 2>&1 | tee "$results/gpu-mpi.log" | tail -15
}

case "$stage" in
    tests) run_tests ;;
    mpi) run_mpi ;;
    bench) run_bench ;;
    all) run_tests; run_bench ;;
esac
