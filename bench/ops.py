"""Time tinyseg's conv2d (forward + backward) against PyTorch on the same machine, in the same run.

    python bench/ops.py                    # NumPy vs torch CPU, writes bench/results/ops-<machine>.json
    python bench/ops.py --quick            # fewer repeats, for a smoke test
    python bench/ops.py --backend cupy     # CuPy vs torch CUDA on a GPU machine
    python bench/ops.py --backend cupy --cuda-kernels   # tinyseg's convolutions by its CUDA kernels
    python bench/ops.py --impl reference   # the reference ops of tinyseg/functional/

Each case builds a float32 batch of 2, runs a few warm-up passes, then times `repeats` passes of
forward + backward (the upstream gradient is a fixed random array): tinyseg's back to back, then
torch's, in three alternating rounds (interleaving single passes would let torch's spinning
OpenMP workers steal tinyseg's cores; run on a quiet machine). The median of each is reported,
with the ratio tinyseg / torch (below 1 means tinyseg is faster). On the GPU both compute in
full float32: TF32 off for torch, CuPy (CUPY_TF32=0) and cuBLAS (NVIDIA_TF32_OVERRIDE=0).
"""
import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time


def _early_option(name, default):
    """The value of `--name VALUE` on the command line, read before argparse (and numpy) run."""
    for i, arg in enumerate(sys.argv[:-1]):
        if arg == name:
            return sys.argv[i + 1]
    return default


def cpu_info():
    """The first processor's fields of /proc/cpuinfo ('vendor_id', 'model name', 'flags', ...)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


# CuPy, cuBLAS and cuDNN read these when they load: full float32, no TF32, on the GPU.
os.environ.setdefault("CUPY_TF32", "0")
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
# The BLAS libraries read these when they load: set them before importing numpy.
THREADS = int(_early_option("--threads", os.cpu_count() or 1))
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = str(THREADS)
_CORETYPE = _early_option("--openblas-coretype", "env")
if _CORETYPE == "native":  # let OpenBLAS pick the kernels for this CPU
    os.environ.pop("OPENBLAS_CORETYPE", None)
elif _CORETYPE != "env":
    os.environ["OPENBLAS_CORETYPE"] = _CORETYPE

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinyseg  # noqa: E402,F401  (before NumPy: sets OPENBLAS_THREAD_TIMEOUT, tinyseg/__init__.py)
import numpy as np  # noqa: E402

import tinyseg.functional as F  # noqa: E402
from tinyseg import config  # noqa: E402
from tinyseg.autograd import Tensor  # noqa: E402
from tinyseg.backend import BackendError, get_backend, keep_freed_memory  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# name, C_in, C_out, H = W, kernel, padding, dilation, groups, target ratio (tinyseg / torch CPU)
CASES = [
    ("3x3 64->64 @64x64", 64, 64, 64, 3, 1, 1, 1, 1.3),
    ("3x3 dil2 256->256 @32x32", 256, 256, 32, 3, 2, 2, 1, 1.3),
    ("1x1 1024->256 @32x32", 1024, 256, 32, 1, 0, 1, 1, 1.3),
    ("3x3 depthwise 728 @32x32", 728, 728, 32, 3, 1, 1, 728, 2.0),
]
# After each op, PyTorch's OpenMP workers keep spinning for a while (~0.2 s) waiting for the
# next one: interleaved with torch, tinyseg would run against two busy cores, and after a pause
# torch would start from sleeping workers. So each framework runs its repeats back to back (after
# its own warm-up), in ROUNDS alternating rounds with a pause after each; the medians are over
# all repeats, and every repeat is in the JSON.
TORCH_SPIN_SECONDS = 0.3
ROUNDS = 3
BATCH = 2



def timed(timer, step, warmup, repeats):
    """Milliseconds of `repeats` back-to-back calls of step(), after `warmup` untimed ones."""
    for _ in range(warmup):
        timer(step)
    return [timer(step) for _ in range(repeats)]

def cpu_model():
    """The CPU's marketing name, e.g. 'AMD EPYC'."""
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def machine_name(backend):
    """A short file-name-safe label: the GPU name on cupy, else the CPU model and core count."""
    if backend == "cupy":
        label = get_backend("cupy").cuda.runtime.getDeviceProperties(0)["name"].decode()
    else:
        label = f"{cpu_model()}-{os.cpu_count()}c"
    safe = "".join(ch if ch.isalnum() else "-" for ch in label.lower())
    return "-".join(part for part in safe.split("-") if part)


def blas_threads():
    """What NumPy's BLAS was told to use (threadpoolctl's answer when it is installed)."""
    try:
        from threadpoolctl import threadpool_info
        return {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
    except ImportError:
        return {"OPENBLAS_NUM_THREADS": os.environ["OPENBLAS_NUM_THREADS"],
                "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}


class Timer:
    """Wall-clock milliseconds of a call, waiting for the GPU to finish when there is one."""

    def __init__(self, synchronize):
        self.synchronize = synchronize

    def __call__(self, fn):
        self.synchronize()
        start = time.perf_counter()
        fn()
        self.synchronize()
        return (time.perf_counter() - start) * 1e3


def tinyseg_step(xp, x, w, b, gy, padding, dilation, groups):
    """One forward + backward pass of tinyseg's conv2d on fresh leaves (as in training)."""
    x, w, b = (xp.asarray(a) for a in (x, w, b))
    gy = xp.asarray(gy)

    def step():
        tensors = [Tensor(a, requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*tensors, stride=1, padding=padding, dilation=dilation, groups=groups)
        y.backward(gy)
    return step


def torch_step(torch, device, x, w, b, gy, padding, dilation, groups):
    """The same pass in PyTorch."""
    x, w, b = (torch.tensor(a, device=device, requires_grad=True) for a in (x, w, b))
    gy = torch.tensor(gy, device=device)

    def step():
        for t in (x, w, b):
            t.grad = None
        y = torch.nn.functional.conv2d(x, w, b, 1, padding, dilation, groups)
        y.backward(gy)
    return step


def run(args):
    xp = get_backend(args.backend)
    import torch
    torch.set_num_threads(THREADS)
    if args.backend == "cupy":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        device = "cuda" if torch.cuda.is_available() else None
        timer = Timer(lambda: (xp.cuda.Device().synchronize(),
                               device and torch.cuda.synchronize()))
    else:
        device, timer = "cpu", Timer(lambda: None)
    repeats, warmup = (3, 1) if args.quick else (max(args.repeats, ROUNDS), 2)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{args.backend} on {machine_name(args.backend)}; {THREADS} threads; numpy {np.__version__} "
          f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'native')}), malloc {args.malloc}, "
          f"torch {torch.__version__}")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before the run; other processes skew the numbers")
    print(f"{'case':28s} {'tinyseg ms':>11s} {'torch ms':>9s} {'ratio':>6s} {'target':>6s}")
    for name, c_in, c_out, size, k, padding, dilation, groups, target in CASES:
        x = rng.standard_normal((BATCH, c_in, size, size), dtype=np.float32)
        w = rng.standard_normal((c_out, c_in // groups, k, k), dtype=np.float32) * 0.1
        b = rng.standard_normal(c_out, dtype=np.float32)
        gy = rng.standard_normal((BATCH, c_out, size, size), dtype=np.float32)
        ours = tinyseg_step(xp, x, w, b, gy, padding, dilation, groups)
        theirs = torch_step(torch, device, x, w, b, gy, padding, dilation, groups) if device else None
        ours_ms, theirs_ms = [], []
        for _ in range(ROUNDS):  # alternating rounds: a slow minute of the VM hits both
            ours_ms += timed(timer, ours, warmup, repeats // ROUNDS)
            theirs_ms += timed(timer, theirs, warmup, repeats // ROUNDS) if theirs else []
            time.sleep(TORCH_SPIN_SECONDS)
        row = {"case": name, "c_in": c_in, "c_out": c_out, "size": size, "kernel": k,
               "padding": padding, "dilation": dilation, "groups": groups, "batch": BATCH,
               "tinyseg_ms": round(statistics.median(ours_ms), 3),
               "torch_ms": round(statistics.median(theirs_ms), 3) if theirs else None,
               "target_ratio": target, "tinyseg_all_ms": [round(t, 3) for t in ours_ms],
               "torch_all_ms": [round(t, 3) for t in theirs_ms]}
        row["ratio"] = round(row["tinyseg_ms"] / row["torch_ms"], 3) if theirs else None
        rows.append(row)
        torch_text = f"{row['torch_ms']:9.2f} {row['ratio']:6.2f}" if theirs else f"{'n/a':>9s} {'':6s}"
        print(f"{name:28s} {row['tinyseg_ms']:11.2f} {torch_text} {target:6.1f}")
    return {
        "impl": config.config.impl, "cuda_kernels": config.config.cuda_kernels,
        "machine": args.machine or machine_name(args.backend), "host": socket.gethostname(),
        "cpu": cpu_model(), "cores": os.cpu_count(), "backend": args.backend,
        "torch_device": device, "numpy": np.__version__, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "blas_threads": blas_threads(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "native"),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "malloc": "freed memory kept for reuse" if args.malloc_applied else "glibc defaults",
        "repeats": repeats // ROUNDS * ROUNDS, "rounds": ROUNDS, "warmup_per_round": warmup,
        "quick": args.quick,
        "load_average_before": round(load, 2), "load_average_after": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": rows,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--quick", action="store_true", help="3 repeats after 1 warm-up")
    parser.add_argument("--repeats", type=int, default=15, help="timed passes per case")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch and BLAS threads (default: all cores)")
    parser.add_argument("--openblas-coretype", default="env",
                        help="env: keep $OPENBLAS_CORETYPE; native: OpenBLAS detects the CPU; "
                             "or a core name such as SkylakeX or Haswell")
    parser.add_argument("--malloc", default="keep", choices=["keep", "default"],
                        help="keep: reuse freed memory (tinyseg.backend.keep_freed_memory, as "
                             "train.py does), for both frameworks; default: glibc's settings")
    parser.add_argument("--machine", help="label for the results file (default: CPU or GPU name)")
    parser.add_argument("--out", help="results file (default: bench/results/ops-<machine>.json)")
    config.add_arguments(parser)
    args = parser.parse_args()
    config.apply_arguments(args)
    args.malloc_applied = args.malloc == "keep" and args.backend == "numpy" and keep_freed_memory()
    try:
        report = run(args)
    except BackendError as error:
        sys.exit(f"bench/ops.py: {error}")
    path = args.out or os.path.join(RESULTS, f"ops-{report['machine']}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
