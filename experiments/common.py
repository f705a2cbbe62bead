"""What the experiments share: where things live, the machine, results as JSON, the run queue.

A *run* is one training (or one fit) with a unique name, e.g. "photos-dupsampling-os16-seed1".
The name is made from the settings that matter, so a row shared by two experiments (learned T
and PCA W at OS 16 belong to Table 1 and to the temperature study) is one run, run once.

    run_queue(runs, execute)   for each run without a result: claim it, execute(run), which
                               writes results/<name>.json when it has finished

Resumable: a run trains in runs/<name>/ and checkpoints as it goes; a killed run continues
from its last checkpoint the next time the queue meets it. Two queues may work at once (each
claims a run with a lock file holding its process id; a lock whose process is gone is taken
over). Results are committed; the run folders (checkpoints, logs) are not.
"""
import contextlib
import json
import os
import platform
import sys
import time

import numpy as np

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(EXPERIMENTS)
sys.path.insert(0, REPO)  # `python experiments/x.py` from a fresh clone, before `pip install -e .`
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
VOC_MASKS = os.path.join(SHARED_DATA, "voc-masks")
VOC_ANIMALS = os.path.join(SHARED_DATA, "voc-animals-half")

# voc-animals-half's classes with enough val images to score (its README)
COMMON_CLASSES = ("background", "cat", "cow", "dog", "horse", "person", "sheep")


class Folders:
    """Where a mode writes: experiments/results + experiments/runs, or a scratch folder (--quick)."""

    def __init__(self, quick, scratch=None):
        base = (scratch or os.path.join(EXPERIMENTS, "quick")) if quick else EXPERIMENTS
        self.quick = quick
        self.results = os.path.join(base, "results")
        self.runs = os.path.join(base, "runs")
        self.projections = os.path.join(self.runs, "projections")
        for folder in (self.results, self.runs, self.projections):
            os.makedirs(folder, exist_ok=True)

    def result_path(self, name):
        return os.path.join(self.results, f"{name}.json")

    def run_dir(self, name):
        return os.path.join(self.runs, name)


def machine():
    """The CPU, core count, thread settings and library versions, for every result."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return dict(cpu=model, cores=os.cpu_count(), python=platform.python_version(),
                numpy=np.__version__, host=platform.node(),
                threads=os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"))


def write_json(path, record):
    """Write a JSON file whole or not at all (temporary file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, default=_plain)
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _plain(value):
    """NumPy scalars and arrays as JSON numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def scores(confusion, class_names):
    """mIoU over all present classes, over the common classes, pixel accuracy, IoU per class."""
    ious = confusion.per_class_iou()
    per_class = {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, ious)}
    common = [per_class[n] for n in COMMON_CLASSES if n in per_class and per_class[n] is not None]
    return dict(miou=confusion.miou(), miou_common=float(np.mean(common)) if common else None,
                pixel_acc=confusion.pixel_accuracy(), per_class_iou=per_class)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claim(run_dir):
    """Yield True if this process may work on the run (it then holds run_dir/.lock), else False.

    The lock file appears whole, with the owner's process id in it (written aside, then linked
    into place, which fails if a lock exists); a lock whose process is gone is moved aside by
    rename, which only one queue can do, before the lock is taken again."""
    os.makedirs(run_dir, exist_ok=True)
    lock = os.path.join(run_dir, ".lock")
    mine = f"{lock}.{os.getpid()}"
    with open(mine, "w") as f:
        f.write(str(os.getpid()))
    try:
        while True:
            try:
                os.link(mine, lock)
                break
            except FileExistsError:
                try:
                    with open(lock) as f:
                        owner = int(f.read().strip())
                except (OSError, ValueError):
                    continue  # gone or being replaced meanwhile: try again
                if owner != os.getpid() and pid_alive(owner):
                    yield False
                    return
                try:
                    os.rename(lock, f"{lock}.stale.{os.getpid()}")  # one queue wins this
                    os.remove(f"{lock}.stale.{os.getpid()}")
                except FileNotFoundError:
                    pass
    finally:
        os.remove(mine)
    try:
        yield True
    finally:
        if os.path.exists(lock):
            os.remove(lock)


class WallClock:
    """Seconds spent on a run over all its sessions, kept in run_dir/wall.json.

    Each session adds its time when it ends (finished, Ctrl-C or an error); a session killed
    with SIGKILL loses its share, so wall_s is then a lower bound (the JSON says so)."""

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, "wall.json")
        self.saved = read_json(self.path) if os.path.exists(self.path) else {"seconds": 0.0, "sessions": 0}
        self.start = time.time()

    def stop(self):
        self.saved = {"seconds": self.total(), "sessions": self.saved["sessions"] + 1}
        write_json(self.path, self.saved)

    def total(self):
        return self.saved["seconds"] + time.time() - self.start


def run_queue(runs, folders, execute, only=None):
    """Execute every run that has no result yet, in order; `only`: a substring of the names.

    execute(run, folders, clock) trains/fits and writes folders.result_path(run["name"]).
    Returns the names of the runs still missing (claimed by another queue, or waiting)."""
    missing = []
    todo = [r for r in runs if only is None or only in r["name"]]
    for k, run in enumerate(todo, start=1):
        name = run["name"]
        if os.path.exists(folders.result_path(name)):
            continue
        with claim(folders.run_dir(name)) as mine:
            if not mine:
                print(f"[{k}/{len(todo)}] {name}: another queue is running it", flush=True)
                missing.append(name)
                continue
            if os.path.exists(folders.result_path(name)):
                continue  # the other queue finished it while this one was looking
            print(f"[{k}/{len(todo)}] {name} ...", flush=True)
            clock = WallClock(folders.run_dir(name))
            try:
                execute(run, folders, clock)
            finally:
                clock.stop()
            if not os.path.exists(folders.result_path(name)):
                missing.append(name)  # it waits for another run (e.g. an oracle of a trained W)
    return missing


def dedupe(runs):
    """The runs in order, each name once (rows shared by experiments are run once)."""
    seen, unique = set(), []
    for run in runs:
        if run["name"] not in seen:
            seen.add(run["name"])
            unique.append(run)
    return unique


def seeds_arg(text):
    return [int(s) for s in text.split(",") if s.strip()]


def projection_file(dataset, ratio, dim, folders, subsample=1):
    """The path of W and mean fitted by PCA on the dataset's masks (every `subsample`-th pixel),
    fitted on first use and cached in folders.projections."""
    from tinyseg.pca import fit_projection, save_projection

    source = os.path.basename(os.path.dirname(os.path.dirname(dataset.root)))  # holds VOCdevkit/
    tag = f"{source}-{dataset.name}-{dataset.split}-r{ratio}-d{dim}"
    path = os.path.join(folders.projections, tag + (f"-sub{subsample}.npz" if subsample > 1 else ".npz"))
    if not os.path.exists(path):
        print(f"  fitting W by PCA on {len(dataset)} masks -> {path} ...", flush=True)
        masks = (dataset.load_mask(i)[::subsample, ::subsample] for i in range(len(dataset)))
        W, mean, meta = fit_projection(masks, dataset.num_classes, ratio, dim)
        meta.update(dataset=dataset.name, split=dataset.split, subsample=subsample)
        save_projection(path, W, mean, meta)
    return path


def fitted_projection(dataset, ratio, dim, folders, subsample=1):
    """(W, mean, meta) of projection_file."""
    from tinyseg.pca import load_projection

    return load_projection(projection_file(dataset, ratio, dim, folders, subsample))


def quick_data(folders):
    """A tiny generated dataset in the VOC layout, for the --quick modes (a second or two)."""
    from tinyseg.data import ensure_synthetic

    root = os.path.join(folders.runs, "synthetic")
    ensure_synthetic(root, num_train=24, num_val=6, size=(96, 64))
    return root


def experiment_main(doc, runs_of, execute, argv=None, add_arguments=None):
    """The command line every experiment shares: --quick, --seeds, --only, --scratch.

    runs_of(seeds, quick, root) lists the experiment's runs; execute runs one (run_queue);
    add_arguments(parser) adds a script's own options. Returns the options and the Folders."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny settings on generated data")
    parser.add_argument("--seeds", type=seeds_arg, default=(0, 1, 2), help="comma-separated seeds")
    parser.add_argument("--only", default=None, help="run only the runs whose name contains this")
    parser.add_argument("--scratch", default=None, help="--quick: write here (default experiments/quick)")
    args = parser.parse_args(argv)
    folders = Folders(args.quick, args.scratch)
    root = quick_data(folders) if args.quick else None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        missing = run_queue(runs_of(args.seeds, args.quick, root), folders, execute, args.only)
    if missing:
        print(f"{len(missing)} run(s) have no result yet (running in another queue, or waiting for "
              f"another run): {', '.join(missing)}")
    return args, folders
