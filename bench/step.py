"""One training step of the whole network, tinyseg against PyTorch, in the same run.

    python bench/step.py                   # NumPy vs torch CPU -> bench/results/step-<machine>.json
    python bench/step.py --quick           # 2 repeats on smaller images: a smoke test
    python bench/step.py --backend cupy    # CuPy vs torch CUDA: batch 8, 512x512, TF32 off
    python bench/step.py --backend cupy --cuda-kernels --out ...   # with the CUDA kernels
    python bench/step.py --impl reference --out ...  # tinyseg's reference ops: what clarity costs
    python bench/step.py --profile         # cProfile of tinyseg's ResNet-50 step, top functions
    python bench/step.py --profile "xception65 step"

The cases are the paper's networks (num_classes 21, output stride 16, float32):

    resnet50 step       ResNet-50 (deep stem, DeepLab layout) + ASPP + DUpsampling
                        (fuse b1u2c3, C~ = 64): forward, loss, backward, SGD update
    resnet50 inference  the same network in eval mode under no_grad, forward only
    xception65 step     Xception-65 + ASPP + DUpsampling (fuse efb2u1c2, C~ = 128)

Batch and image size: on the CPU a step is batch 2 at 256x256 and inference batch 1 at
512x512; on the GPU both are batch 8 at 512x512. --quick uses 128x128 steps and 256x256
inference on the CPU (the JSON says so).

The torch network is bench/torch_reference.py loaded with the tinyseg model's weights, so both
start from the same numbers: the first step's losses must agree, which the table shows as a
check ("first diff"). After two warm-up steps (one with --quick) the two alternate, `repeats`
times each, so that both see the same background load; the median is reported, with the ratio
tinyseg / torch (below 1: tinyseg is faster) and the target ratio. The JSON also records how
busy OTHER processes kept the CPUs while timing (a shared machine skews everything).
Timings on the GPU wait for the device to finish (synchronize) before the clock stops; torch
runs there with TF32 disabled (matmul and cuDNN) and CuPy with CUPY_TF32=0, and the process
with NVIDIA_TF32_OVERRIDE=0, so both compute in full float32.

Memory (Linux): each framework runs each case once more in a subprocess of its own (tinyseg's
never imports torch). After a warm-up step it resets the kernel's peak-RSS counter
(/proc/self/clear_refs) and reports the peak resident set size (VmHWM) over one more step: the
libraries, the model, its gradients and momentum, and the step's working memory. (Not
resource.getrusage's ru_maxrss: in a child process it includes the parent's peak.) On the
GPU it reports the allocators' peaks instead (CuPy's memory pool, torch's reserved bytes).
"""
import argparse
import gc
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import ops  # noqa: E402  (sets the BLAS thread and the TF32 variables before NumPy loads)

import numpy as np  # noqa: E402

from tinyseg import config, nn, no_grad, optim  # noqa: E402
from tinyseg.backend import BackendError, device_name, get_backend, keep_freed_memory, to_numpy  # noqa: E402
from tinyseg.models import build_model  # noqa: E402

NUM_CLASSES, OUTPUT_STRIDE = 21, 16
MODELS = {"resnet50": dict(backbone="resnet50", fuse=("b1u2c3",), dim=64),
          "xception65": dict(backbone="xception65", fuse=("efb2u1c2",), dim=128)}
# name, model, "step" or "inference", target ratio tinyseg / torch
CASES = [("resnet50 step", "resnet50", "step", 1.2),
         ("resnet50 inference", "resnet50", "inference", 1.2),
         ("xception65 step", "xception65", "step", 1.5)]
MEMORY_TARGET = 1.5
# (batch, image side) for each backend and kind of case; --quick shrinks the CPU images
SHAPES = {("numpy", "step"): (2, 256), ("numpy", "inference"): (1, 512),
          ("cupy", "step"): (8, 512), ("cupy", "inference"): (8, 512)}
QUICK_SIDE = {"step": 128, "inference": 256}
LR, MOMENTUM, WEIGHT_DECAY = 0.007, 0.9, 1e-4


def shape_of(args, what):
    batch, side = SHAPES[(args.backend, what)]
    if args.quick and args.backend == "numpy":
        side = QUICK_SIDE[what]
    return batch, side


# ---------------------------------------------------------------- the two networks
def make_model(name):
    """The tinyseg network of MODELS[name] with seeded weights and a random orthonormal W."""
    spec = MODELS[name]
    nn.init.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = OUTPUT_STRIDE * OUTPUT_STRIDE * NUM_CLASSES
    W, _ = np.linalg.qr(rng.standard_normal((rows, spec["dim"])))  # (r*r*C, C~), orthonormal
    mean = rng.uniform(0, 1, rows)
    return build_model(spec["backbone"], "dupsampling", num_classes=NUM_CLASSES,
                       output_stride=OUTPUT_STRIDE, fuse=spec["fuse"], dim=spec["dim"],
                       projection=(W.astype(np.float32), mean.astype(np.float32)))


def make_batch(batch, side):
    rng = np.random.default_rng(1)
    images = rng.standard_normal((batch, 3, side, side), dtype=np.float32)
    masks = rng.integers(0, NUM_CLASSES, (batch, side, side))
    masks[:, :side // 16] = 255  # a band of void pixels, as at VOC's object borders
    return images, masks


def tinyseg_runner(model, images, masks, what, xp):
    """A function running one step (returns the loss) or one inference (returns the scores)."""
    model.to(device_name(xp)).train(what == "step")
    images, masks = xp.asarray(images), xp.asarray(masks)
    if what == "inference":
        def infer():
            with no_grad():
                return model(images).data
        return infer
    opt = optim.SGD(model.param_groups(WEIGHT_DECAY), lr=LR, momentum=MOMENTUM)

    def step():
        opt.zero_grad()
        loss = model.loss(images, masks)
        loss.backward()
        opt.step()
        return float(loss.data)
    return step


def torch_runner(torch, model, images, masks, what, device):
    """The same for the torch twin of `model` (bench/torch_reference.py, same weights), with
    tinyseg's SGD parameter groups (no weight decay on the temperature)."""
    import torch_reference  # not at the top: tinyseg's memory subprocess must not load torch
    twin = torch_reference.from_tinyseg(model).to(device).train(what == "step")
    images, masks = torch.from_numpy(images).to(device), torch.from_numpy(masks).to(device)
    if what == "inference":
        def infer():
            with torch.no_grad():
                return twin(images)
        return infer
    names = {id(p): name for name, p in model.named_parameters()}
    by_name = dict(twin.named_parameters())
    groups = [{"params": [by_name[names[id(p)]] for p in group["params"]],
               "weight_decay": group["weight_decay"]}
              for group in model.param_groups(WEIGHT_DECAY)]
    opt = torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM)

    def step():
        opt.zero_grad()
        loss = twin.loss(images, masks)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def agreement(ours, theirs, what):
    """How far apart the first results are: relative loss difference, or max score difference
    relative to the largest score."""
    if what == "step":
        return abs(ours - theirs) / abs(theirs)
    ours, theirs = to_numpy(ours), theirs.detach().cpu().numpy()
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# ---------------------------------------------------------------- timing
def time_case(args, xp, torch, device, timer, case):
    name, model_name, what, target = case
    batch, side = shape_of(args, what)
    images, masks = make_batch(batch, side)
    model = make_model(model_name)
    ours = tinyseg_runner(model, images, masks, what, xp)
    theirs = torch_runner(torch, model, images, masks, what, device) if device else None
    first_ours = ours()  # warm-up; from the same weights, the first results must agree
    first_theirs = theirs() if theirs else None
    for _ in range(args.warmup - 1):
        ours()
        if theirs:
            theirs()
    ours_ms, theirs_ms = [], []
    for _ in range(args.repeats):  # alternate, so both see the same background load
        ours_ms.append(timer(ours))
        if theirs:
            theirs_ms.append(timer(theirs))
    row = {"case": name, "model": dict(MODELS[model_name], num_classes=NUM_CLASSES,
                                       output_stride=OUTPUT_STRIDE, decoder="dupsampling"),
           "mode": what, "batch": batch, "size": [side, side],
           "tinyseg_ms": round(statistics.median(ours_ms), 1),
           "torch_ms": round(statistics.median(theirs_ms), 1) if theirs else None,
           "target_ratio": target,
           "tinyseg_ms_all": [round(t, 1) for t in ours_ms],
           "torch_ms_all": [round(t, 1) for t in theirs_ms]}
    row["ratio"] = round(row["tinyseg_ms"] / row["torch_ms"], 3) if theirs else None
    if what == "step":
        row["first_loss"] = {"tinyseg": first_ours, "torch": first_theirs}
    if theirs:
        row["first_result_rel_diff"] = agreement(first_ours, first_theirs, what)
    return row


# ---------------------------------------------------------------- memory, one process each
def peak_memory_child(args):
    """Run in a subprocess: one case in one framework; print its memory figures as JSON."""
    name, framework = args.child
    _, model_name, what, _ = next(case for case in CASES if case[0] == name)
    xp = get_backend(args.backend)
    images, masks = make_batch(*shape_of(args, what))
    model = make_model(model_name)
    if framework == "tinyseg":
        run = tinyseg_runner(model, images, masks, what, xp)
    else:
        import torch
        configure_torch(torch, args.backend)
        device = "cuda" if args.backend == "cupy" else "cpu"
        run = torch_runner(torch, model, images, masks, what, device)
        del model  # only the twin stays
    gc.collect()
    run()  # warm-up: first allocations, momentum buffers
    report = {"framework": framework, "case": name}
    if args.backend == "cupy":
        report.update(gpu_memory(framework, xp, run))
    else:
        report.update(cpu_memory(run))
    print(json.dumps(report))


def peak_rss_mb():
    """This process's peak resident set size in MB: VmHWM of /proc/self/status (Linux).

    Not ru_maxrss: for a child process that also counts the parent's peak at the fork.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError("no VmHWM in /proc/self/status")


def cpu_memory(run):
    """Peak RSS (MB) over one call of `run`, and over the whole process before it."""
    before = peak_rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS
    run()
    return {"peak_rss_mb": round(peak_rss_mb(), 1), "process_peak_before_mb": round(before, 1),
            "scope": "peak RSS (VmHWM) over one step, after a warm-up step"}


def gpu_memory(framework, xp, run):
    """The allocator's peak (MB) over one more call of `run`."""
    if framework == "tinyseg":
        pool = xp.get_default_memory_pool()
        run()
        xp.cuda.Device().synchronize()
        return {"peak_gpu_mb": round(pool.total_bytes() / 2**20, 1),
                "scope": "CuPy memory pool total_bytes after a second step"}
    import torch
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return {"peak_gpu_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
            "peak_gpu_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "scope": "torch max_memory_reserved over a second step"}


def measure_memory(args, name, framework):
    """Run peak_memory_child in a fresh interpreter and return its report."""
    command = [sys.executable, os.path.abspath(__file__), "--child", name, framework,
               "--backend", args.backend, "--threads", str(ops.THREADS),
               "--openblas-coretype", args.openblas_coretype, "--malloc", args.malloc,
               "--impl", args.impl] + (["--cuda-kernels"] if args.cuda_kernels else [])
    command += ["--quick"] if args.quick else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory subprocess for {name} / {framework} failed: "
                           + done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the whole run
def cpu_times():
    """(busy seconds of all cores, CPU seconds of this process, wall clock) now; Linux."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]  # user nice system idle iowait ...
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime, time.perf_counter()


def others_busy(start, end):
    """The fraction of all cores that OTHER processes kept busy between two cpu_times().

    Unlike the load average (a mean over the last minute, this benchmark included), this is
    what disturbed the measurement itself.
    """
    busy, own, wall = (b - a for a, b in zip(start, end))
    return round(max(0.0, (busy - own) / (wall * os.cpu_count())), 3)


def configure_torch(torch, backend):
    torch.set_num_threads(ops.THREADS)
    if backend == "cupy":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def run(args):
    xp = get_backend(args.backend)  # a one-line BackendError when cupy or the GPU is missing
    import torch
    configure_torch(torch, args.backend)
    if args.backend == "cupy":
        device = "cuda" if torch.cuda.is_available() else None
        timer = ops.Timer(lambda: (xp.cuda.Device().synchronize(),
                                   device and torch.cuda.synchronize()))
    else:
        device, timer = "cpu", ops.Timer(lambda: None)
    machine = args.machine or ops.machine_name(args.backend)
    idle_check = cpu_times()
    time.sleep(1.0)
    busy = others_busy(idle_check, cpu_times())
    print(f"{args.backend} on {machine}; {ops.THREADS} threads; numpy {np.__version__} "
          f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'native')}), malloc {args.malloc}, "
          f"torch {torch.__version__} on {device or 'n/a'}")
    if busy > 0.1:
        print(f"warning: other processes keep {busy:.0%} of the CPUs busy; they skew the numbers")
    print(f"{'case':20s} {'batch':>5s} {'size':>5s} {'tinyseg ms':>11s} {'torch ms':>9s} "
          f"{'ratio':>6s} {'target':>6s} {'first diff':>10s}")
    rows = []
    timing_start = cpu_times()
    for case in CASES:
        row = time_case(args, xp, torch, device, timer, case)
        gc.collect()
        rows.append(row)
        torch_text = (f"{row['torch_ms']:9.1f} {row['ratio']:6.2f}" if row["torch_ms"]
                      else f"{'n/a':>9s} {'':6s}")
        first_diff = row.get("first_result_rel_diff", 0)
        print(f"{row['case']:20s} {row['batch']:5d} {row['size'][0]:5d} "
              f"{row['tinyseg_ms']:11.1f} {torch_text} {row['target_ratio']:6.1f} "
              f"{first_diff:10.1e}")
    busy_during = others_busy(timing_start, cpu_times())
    if not args.no_memory:
        unit = "GPU MB" if args.backend == "cupy" else "peak RSS MB"
        print(f"\n{'case':20s} {'tinyseg ' + unit:>19s} {'torch ' + unit:>17s} {'ratio':>6s} "
              f"{'target':>6s}")
        key = "peak_gpu_mb" if args.backend == "cupy" else "peak_rss_mb"
        for row in rows:
            ours = measure_memory(args, row["case"], "tinyseg")
            theirs = measure_memory(args, row["case"], "torch") if device else None
            row["memory"] = {"tinyseg": ours, "torch": theirs, "target_ratio": MEMORY_TARGET}
            ratio = round(ours[key] / theirs[key], 3) if theirs else None
            row["memory"]["ratio"] = ratio
            print(f"{row['case']:20s} {ours[key]:19.1f} "
                  f"{(theirs or {}).get(key, float('nan')):17.1f} {ratio or float('nan'):6.2f} "
                  f"{MEMORY_TARGET:6.1f}")
    shared = max(busy, busy_during) > 0.1
    note = args.note or (f"taken on a shared machine: other processes kept {busy_during:.0%} of "
                         "the CPUs busy while timing; rerun on a quiet one" if shared
                         else "quiet: no other process was busy while timing")
    report = {
        "machine": machine, "host": socket.gethostname(), "cpu": ops.cpu_model(),
        "cores": os.cpu_count(), "backend": args.backend, "torch_device": device,
        "numpy": np.__version__, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "blas_threads": ops.blas_threads(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "native"),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "malloc": ("freed memory kept for reuse (tinyseg.backend.keep_freed_memory, as train.py "
                   "does), in the one process that runs both frameworks" if args.malloc_applied
                   else "glibc defaults"),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "impl": args.impl, "dtype": "float32", "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
        "sizes": ("--quick: smaller images than the full run (steps 128x128, inference "
                  "256x256 on the CPU)" if args.quick and args.backend == "numpy"
                  else "full sizes"),
        "sgd": {"lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY},
        "load_average": round(os.getloadavg()[0], 2),
        "others_busy_before": busy, "others_busy_while_timing": busy_during,
        "shared_machine": shared, "note": note,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": rows,
    }
    if args.backend == "cupy":
        report["cuda_kernels"] = ("tinyseg/fast/cuda_kernels.py (--cuda-kernels)"
                                  if config.config.cuda_kernels else "reference ops on CuPy")
        report["tf32"] = {"torch_matmul": torch.backends.cuda.matmul.allow_tf32,
                          "torch_cudnn": torch.backends.cudnn.allow_tf32,
                          "CUPY_TF32": os.environ.get("CUPY_TF32"),
                          "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE")}
    return report


def profile(args):
    """cProfile over `repeats` tinyseg runs of one case (after one warm-up run)."""
    import cProfile
    import pstats
    xp = get_backend(args.backend)
    names = [case[0] for case in CASES]
    if args.profile not in names:
        raise ValueError(f"--profile: unknown case {args.profile!r}; choose one of {names}")
    _, model_name, what, _ = CASES[names.index(args.profile)]
    images, masks = make_batch(*shape_of(args, what))
    run_once = tinyseg_runner(make_model(model_name), images, masks, what, xp)
    run_once()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.repeats):
        run_once()
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.strip_dirs()
    print(f"tinyseg {args.profile}, {args.repeats} runs: by cumulative time")
    stats.sort_stats("cumulative").print_stats(args.top)
    print("by own time")
    stats.sort_stats("tottime").print_stats(args.top)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--quick", action="store_true",
                        help="2 repeats after 1 warm-up, smaller images on the CPU")
    parser.add_argument("--repeats", type=int, help="timed steps per case (default 5; quick 2)")
    parser.add_argument("--threads", type=int, default=ops.THREADS,
                        help="torch and BLAS threads (default: all cores)")
    parser.add_argument("--openblas-coretype", default="env",
                        help="as in bench/ops.py: env, native, or a core name")
    parser.add_argument("--malloc", default="keep", choices=["keep", "default"],
                        help="keep: the process reuses freed memory, as train.py sets it "
                             "(tinyseg.backend.keep_freed_memory), for both frameworks; "
                             "default: glibc's own settings")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--profile", nargs="?", const=CASES[0][0], metavar="CASE",
                        help="profile tinyseg on one case (default: the ResNet-50 step) "
                             "instead of benchmarking")
    parser.add_argument("--top", type=int, default=35, help="functions listed by --profile")
    parser.add_argument("--note", help="a remark stored in the JSON (e.g. 'quiet machine')")
    parser.add_argument("--machine", help="label for the results file (default: CPU or GPU name)")
    parser.add_argument("--out", help="results file (default: bench/results/step-<machine>.json)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "FRAMEWORK"), help=argparse.SUPPRESS)
    config.add_arguments(parser)
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.warmup = 1 if args.quick else 2
    args.malloc_applied = args.malloc == "keep" and args.backend == "numpy" and keep_freed_memory()
    config.apply_arguments(args)
    try:
        if args.child:
            peak_memory_child(args)
            return
        if args.profile:
            profile(args)
            return
        report = run(args)
    except BackendError as error:
        sys.exit(f"bench/step.py: {error}")
    path = args.out or os.path.join(ops.RESULTS, f"step-{report['machine']}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
