"""Data-parallel scaling on one machine: images/s of train.py on 1 and 2 processes (mpiexec,
one thread each) against 1 process with 2 threads, the same run otherwise.

    python bench/scaling.py                 # -> bench/results/scaling-<machine>.json
    python bench/scaling.py --quick         # tiny network and images: a smoke test
    python bench/scaling.py --backend cupy --processes 1 2   # on a GPU machine (NCCL)

Each configuration trains the same run (ResNet-50 + DUpsampling at output stride 16, batch 4,
256x256 crops, on the generated VOC-layout data; W fitted once beforehand) for a few
iterations; the rate is the median of the per-iteration images/s that train.py logs, over
the iterations after the first two (start-up). Processes share the machine's cores: 2
processes of 1 thread use the same 2 cores as 1 process of 2 threads, so this measures how
well each way fills them (threads: the BLAS and tinyseg's slab threads; processes: each runs
its own whole step, and they meet once per step to average the gradients).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import ops  # noqa: E402  (machine_name, cpu_model)

FULL = ["--model", "resnet50", "--decoder", "dupsampling", "--output-stride", "16", "--fuse", "b1u2c3",
        "--batch-size", "4", "--crop", "256", "--iters", "8"]
QUICK = ["--model", "tiny_resnet", "--output-stride", "8", "--batch-size", "4", "--crop", "64",
         "--iters", "6"]


def images_per_second(log_path, skip=2):
    rates = []
    with open(log_path) as f:
        for line in f:
            record = json.loads(line)
            if "images_per_s" in record and record["iter"] > skip:
                rates.append(record["images_per_s"])
    return statistics.median(rates)


def run_config(name, processes, threads, common, work):
    out = os.path.join(work, name)
    command = [sys.executable, os.path.join(REPO, "train.py"), *common, "--out", out]
    if processes > 1:
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                               + os.environ["PATH"])
        if mpiexec is None:
            sys.exit("bench/scaling.py: mpiexec not found: pip install -e '.[mpi]'")
        command = [mpiexec, "-n", str(processes)] + command
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"bench/scaling.py: {name} failed:\n{done.stderr[-2000:]}")
    rate = images_per_second(os.path.join(out, "log.jsonl"))
    print(f"{name:28s} {rate:8.2f} img/s  ({time.time() - start:.0f} s)", flush=True)
    return dict(name=name, processes=processes, threads_per_process=threads,
                images_per_s=round(rate, 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--quick", action="store_true", help="tiny network and crops")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="process counts to time with one thread each")
    parser.add_argument("--note", help="a remark stored in the JSON")
    parser.add_argument("--out", help="results file (default bench/results/scaling-<machine>.json)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tinyseg-scaling-")
    data = os.path.join(work, "data")
    network = QUICK if args.quick else FULL
    common = ["--backend", args.backend, "--data-root", data, *network, "--workers", "1",
              "--log-every", "1", "--val-every", "0", "--ckpt-every", "1000"]
    # one run first: it generates the data and fits W, which the timed runs then read
    first = os.path.join(work, "first")
    done = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *common, "--iters", "1",
                           "--out", first], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"bench/scaling.py: the first run failed:\n{done.stderr[-2000:]}")
    common += ["--projection", os.path.join(first, "projection.npz")]
    rows = [run_config(f"{p} process(es) x 1 thread", p, 1, common, work) for p in args.processes]
    if args.backend == "numpy":
        rows.append(run_config("1 process x 2 threads", 1, 2, common, work))
    shutil.rmtree(work, ignore_errors=True)
    report = dict(machine=ops.machine_name(args.backend), cpu=ops.cpu_model(), cores=os.cpu_count(),
                  backend=args.backend, network=" ".join(network), note=args.note,
                  load_average=round(os.getloadavg()[0], 2), date=time.strftime("%Y-%m-%d %H:%M:%S"),
                  rows=rows)
    path = args.out or os.path.join(BENCH, "results", f"scaling-{report['machine']}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
