"""Table 1's upper bounds (mIoU*) on real VOC masks: DUpsampling's PCA vs bilinear, and fit times.

    python bench/pca_oracle.py --data-root ../shared/data/voc-masks
    python bench/pca_oracle.py --data-root ../shared/data/voc-masks --ratios 16 --dims 64 \
        --limit-train 100 --limit-val 50          # a quick smoke run

For each ratio r, W is fitted by PCA on the training masks (tinyseg.pca.fit_projection, timed)
with the largest requested C~; the smaller C~ are its leading columns (PCA components are
nested). The first --voids rule is measured at every C~, the others at --void-dim. Each val
mask is then reconstructed and scored against itself (void not scored):

* DUpsampling oracle: x = W^T (v - mean) per r x r block, v~ = W x + mean, argmax per pixel;
* bilinear oracle: the class fractions of each block, bilinearly upsampled by r, argmax.

The paper's mIoU* (Table 1) is a different, trained measurement: a five-layer CNN fed the
ground-truth labels, so it also loses what the CNN fails to learn. These closed-form oracles
are what each upsampling can represent at best.

Writes bench/results/pca-oracle-<machine>.json.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tinyseg import pca  # noqa: E402
from tinyseg.blocks import VOID_MODES  # noqa: E402
from tinyseg.data import DataError, build_dataset  # noqa: E402
from tinyseg import metrics  # noqa: E402
from tinyseg.metrics import ConfusionMatrix  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PAPER_TABLE_1 = {"bilinear": {"32": 94.80, "16": 98.40}, "dupsampling": {"32": 99.90, "16": 99.95}}


def machine_name():
    """e.g. 'amd-epyc-2c': the CPU model and the core count, file-name safe."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1] for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    label = f"{model.strip()}-{os.cpu_count()}c".lower()
    safe = "".join(ch if ch.isalnum() else "-" for ch in label)
    return "-".join(part for part in safe.split("-") if part)


def masks_of(dataset, limit):
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return [dataset.load_mask(i) for i in range(count)]


def fit(train_masks, num_classes, ratio, dim, void, solver):
    """Fit and time one projection; returns W and mean as float32 (enough for an argmax)."""
    start = time.perf_counter()
    W, mean, meta = pca.fit_projection(train_masks, num_classes, ratio, dim, void, solver=solver)
    seconds = time.perf_counter() - start
    print(f"r={ratio} void={void}: fitted on {meta['num_blocks']} blocks in {seconds:.1f} s",
          flush=True)
    return W.astype(np.float32), mean.astype(np.float32), meta, seconds


def dupsampling_miou(val_masks, W, mean, ratio, num_classes, void):
    confusion = ConfusionMatrix(num_classes)
    for mask in val_masks:
        confusion.update(metrics.dupsampling_oracle(mask, W, mean, ratio, void), mask)
    return confusion


def bilinear_miou(val_masks, ratio, num_classes, void):
    confusion = ConfusionMatrix(num_classes)
    for mask in val_masks:
        confusion.update(metrics.bilinear_oracle(mask, ratio, num_classes, void), mask)
    return confusion


def run(args, path):
    """Measure every configuration, rewriting the results file after each row."""
    train = build_dataset(args.dataset, args.data_root, args.train_split, labels_only=True)
    val = build_dataset(args.dataset, args.data_root, args.val_split, labels_only=True)
    train_masks, val_masks = masks_of(train, args.limit_train), masks_of(val, args.limit_val)
    num_classes = train.num_classes
    print(f"{len(train_masks)} {args.train_split} masks, {len(val_masks)} {args.val_split} masks",
          flush=True)
    report = {
        "machine": args.machine or machine_name(), "cores": os.cpu_count(),
        "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "fit_seconds": "fit on masks already in memory: accumulation + eigenvectors",
        "dataset": args.dataset, "train_split": args.train_split, "val_split": args.val_split,
        "num_train": len(train_masks), "num_val": len(val_masks),
        "paper_table_1_miou_star": PAPER_TABLE_1, "rows": [],
    }
    rows = report["rows"]
    for ratio in args.ratios:
        voids = args.voids if ratio in args.void_ratios else args.voids[:1]
        for void in voids:
            dims = sorted(args.dims) if void == args.voids[0] else [args.void_dim]
            W, mean, meta, seconds = fit(train_masks, num_classes, ratio, max(dims), void,
                                         args.solver)
            for dim in dims:
                explained = meta["explained_variance"][:dim].sum() / meta["total_variance"]
                confusion = dupsampling_miou(val_masks, W[:, :dim], mean, ratio, num_classes, void)
                rows.append(dict(method="dupsampling", ratio=ratio, dim=dim, void=void,
                                 solver=args.solver, fit_seconds=round(seconds, 1),
                                 num_blocks=meta["num_blocks"],
                                 explained_variance=round(float(explained), 6),
                                 miou=round(100 * confusion.miou(), 3),
                                 pixel_acc=round(100 * confusion.pixel_accuracy(), 3)))
                print(f"  C~={dim}: explained {100 * explained:.2f}%, oracle mIoU "
                      f"{rows[-1]['miou']:.2f}%", flush=True)
                write(report, path)
        for void in [v for v in args.voids if v != "skip"]:  # "skip" encodes void as "zero"
            confusion = bilinear_miou(val_masks, ratio, num_classes, void)
            rows.append(dict(method="bilinear", ratio=ratio, void=void,
                             miou=round(100 * confusion.miou(), 3),
                             pixel_acc=round(100 * confusion.pixel_accuracy(), 3)))
            print(f"r={ratio} bilinear (void {void}): oracle mIoU {rows[-1]['miou']:.2f}%",
                  flush=True)
            write(report, path)


def write(report, path):
    report["load_average"] = os.getloadavg()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the folder holding VOCdevkit/")
    parser.add_argument("--dataset", default="voc", help="voc (official train) or voc_aug")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--ratios", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--voids", nargs="+", choices=VOID_MODES, default=list(VOID_MODES),
                        help="void rules to compare; the first is used for the other ratios")
    parser.add_argument("--void-ratios", type=int, nargs="*", default=[16],
                        help="ratios at which every --voids rule is fitted")
    parser.add_argument("--void-dim", type=int, default=64,
                        help="the C~ at which the other --voids rules are compared")
    parser.add_argument("--solver", choices=pca.SOLVERS, default="auto")
    parser.add_argument("--limit-train", type=int, help="use only the first N training masks")
    parser.add_argument("--limit-val", type=int, help="use only the first N val masks")
    parser.add_argument("--machine", help="label for the results file (default: CPU and cores)")
    parser.add_argument("--out", help="default: bench/results/pca-oracle-<machine>.json")
    args = parser.parse_args()
    path = args.out or os.path.join(RESULTS, f"pca-oracle-{args.machine or machine_name()}.json")
    try:
        run(args, path)
    except (DataError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
