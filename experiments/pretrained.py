"""Part 1's photo comparisons again, from an ImageNet start: MobileNetV2 fine-tuned from the
TFLite classifier in ../shared/data/imagenet-mobilenet (issue 16; experiments/photos.py).

    python experiments/pretrained.py                     # every run missing a result
    python experiments/pretrained.py --quick             # end to end in seconds, generated data

Rows: bilinear vs DUpsampling at output strides 32 and 16; T learned vs fixed; W by PCA vs
learned. Same data, crops, iterations and seeds as the from-scratch rows, lr 0.007 (the
paper's fine-tuning rate); the report puts them beside the from-scratch rows.
Results: experiments/results/mnv2-photos-*.json.
"""
import argparse
import os
import sys

import numpy as np

from common import Folders, quick_data, run_queue, seeds_arg
from photos import IMAGENET_MOBILENET, execute, photo_run

SEEDS = (0, 1, 2)


def pretrained_runs(seeds, quick=False, root=None):
    """The runs of this experiment; none (with a note) where the TFLite file is absent."""
    if not os.path.exists(IMAGENET_MOBILENET):
        print(f"pretrained runs left out: {IMAGENET_MOBILENET} not found")
        return []
    runs = [photo_run(decoder, r, seed, quick=quick, root=root, pretrained=True)
            for r in (32, 16) for decoder in ("dupsampling", "bilinear") for seed in seeds]
    runs += [photo_run("dupsampling", 16, seed, "fixed", quick=quick, root=root, pretrained=True)
             for seed in seeds]
    runs += [photo_run("dupsampling", 16, seed, w_source="learned", quick=quick, root=root,
                       pretrained=True) for seed in seeds]
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings on generated data")
    parser.add_argument("--seeds", type=seeds_arg, default=SEEDS, help="comma-separated seeds")
    parser.add_argument("--only", default=None, help="run only the runs whose name contains this")
    parser.add_argument("--scratch", default=None, help="--quick: write here (default experiments/quick)")
    args = parser.parse_args(argv)
    folders = Folders(args.quick, args.scratch)
    root = quick_data(folders) if args.quick else None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        run_queue(pretrained_runs(args.seeds, args.quick, root), folders, execute, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
