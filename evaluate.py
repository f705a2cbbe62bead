"""Evaluate a checkpoint: mIoU (over present classes), pixel accuracy and per-class IoU.

    python evaluate.py --checkpoint runs/RUN/best.npz [--dataset voc --data-root PATH --split val]
        [--scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip] [--save-dir DIR] [--json PATH]

Dataset, data root and split default to those the run was trained with (its config.json).
"""
import argparse
import json
import os
import sys

import tinyseg  # noqa: F401  (before NumPy: it sets OpenBLAS's thread timeout, see tinyseg/__init__.py)
import numpy as np

from tinyseg.backend import BackendError, device_name
from tinyseg.cli import add_backend_arguments, setup_backend
from tinyseg.data import DATASET_NAMES, DataError, build_dataset
from tinyseg.evaluation import evaluate, format_report, parse_scales, save_prediction
from tinyseg.nn import StateDictError
from tinyseg.progress import Progress
from tinyseg.run import model_from_checkpoint, read_run_settings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .npz written by train.py")
    add_backend_arguments(p)
    p.add_argument("--dataset", default=None, choices=DATASET_NAMES,
                   help="default: the one the run was trained on (its config.json)")
    p.add_argument("--data-root", default=None,
                   help="folder holding VOCdevkit/ etc.; default: the run's (its config.json)")
    p.add_argument("--split", default="val", help="the split to score")
    p.add_argument("--mask-values", default=None,
                   help="--dataset folder: STORED:ID pairs (default: the run's)")
    p.add_argument("--scales", default="1.0", help="comma-separated test scales, e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    p.add_argument("--flip", action="store_true", help="also average over left-right flips")
    p.add_argument("--long-side", type=int, default=None,
                   help="resize each image so that its longer side has this many pixels before "
                        "the scales (e.g. 513 for TensorFlow DeepLab models); scored at full size")
    p.add_argument("--max-images", type=int, default=None, help="score the first N images only")
    p.add_argument("--save-dir", default=None, help="write prediction PNGs and image|truth|prediction panels")
    p.add_argument("--classes", default=None,
                   help="also report the mIoU over these classes only, comma-separated names "
                        "(e.g. background,cat,cow,dog,horse,person,sheep)")
    p.add_argument("--json", default=None, help="write the summary as JSON")
    return p.parse_args(argv)


def check_writable(path):
    """An OSError naming `path` unless a file can be written there (tried, then removed)."""
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as error:
        raise OSError(f"--json {path}: cannot write there ({error.strerror})") from None
    if not existed:
        os.remove(path)


def class_subset(text, class_names):
    """The indices of the comma-separated class names in `text` (None for no --classes)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in class_names]
    if unknown or not names:
        raise ValueError(f"--classes: unknown class name(s) {unknown or [text]}; this dataset has "
                         + ", ".join(class_names))
    return [class_names.index(n) for n in names]


def main(argv=None):
    args = parse_args(argv)
    try:
        scales = parse_scales(args.scales)
        if args.max_images is not None and args.max_images < 1:
            raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
        if args.json:  # found out now, not after the whole evaluation
            check_writable(args.json)
        if args.long_side is not None and args.long_side < 1:
            raise ValueError(f"--long-side must be a positive number of pixels, got {args.long_side}")
        xp = setup_backend(args)
        model, meta = model_from_checkpoint(args.checkpoint)
        trained = read_run_settings(args.checkpoint)
        name = args.dataset or trained.get("dataset")
        root = args.data_root or trained.get("data_root")
        if name is None or root is None:
            raise DataError("no dataset known for this checkpoint: pass --dataset and --data-root")
        values = args.mask_values or (trained.get("mask_values") if name == trained.get("dataset") else None)
        dataset = build_dataset(name, root, args.split, mask_values=values)
        subset = class_subset(args.classes, dataset.class_names)
        if dataset.num_classes != model.num_classes:
            raise ValueError(f"{args.checkpoint} predicts {model.num_classes} classes, "
                             f"{name} has {dataset.num_classes}")
        model.to(device_name(xp))

        def save_pictures(i, image, mask, prediction):
            save_prediction(args.save_dir, dataset.ids[i], image, mask, prediction, dataset.palette,
                            dataset.class_names)

        confusion = evaluate(model, dataset, xp, scales=scales, flip=args.flip,
                             max_images=args.max_images, progress=Progress("evaluating"),
                             on_prediction=save_pictures if args.save_dir else None,
                             long_side=args.long_side)
    except KeyboardInterrupt:
        return 130
    except (BackendError, DataError, StateDictError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(confusion, dataset.class_names))
    subset_miou = None
    if subset:
        ious = confusion.per_class_iou()[subset]
        subset_miou = float(np.nanmean(ious)) if not np.isnan(ious).all() else float("nan")
        print(f"mIoU over {len(subset)} classes ({args.classes}): {100 * subset_miou:.2f}")
    if args.json:
        ious = confusion.per_class_iou()
        summary = dict(miou=confusion.miou(), pixel_acc=confusion.pixel_accuracy(),
                       per_class_iou={n: (None if v != v else float(v)) for n, v in zip(dataset.class_names, ious)},
                       num_images=len(dataset) if args.max_images is None else min(args.max_images, len(dataset)), checkpoint=args.checkpoint,
                       dataset=name, data_root=root, split=args.split, scales=scales,
                       flip=args.flip, long_side=args.long_side, iteration=meta.get("iteration"),
                       classes=args.classes, miou_classes=subset_miou)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
