"""Table 1, mIoU on real photos: bilinear vs DUpsampling at output strides 32 and 16.

    python experiments/table1_photos.py                  # every run missing a result
    python experiments/table1_photos.py --quick          # end to end in seconds, generated data

small_resnet from scratch on the 3,131 `train_aug` photos of ../shared/data/voc-animals-half,
scored on its 230 `val` photos (experiments/photos.py has the settings and the budget).
The paper's claims: DUpsampling beats bilinear at the same stride, and DUpsampling at OS 32 is
about as good as bilinear at OS 16 (72.09 vs 72.15) for a fraction of the multiply-adds.
Results: experiments/results/photos-<decoder>-os<r>-seed<s>.json.
"""
import argparse
import sys

import numpy as np

from common import Folders, quick_data, run_queue, seeds_arg
from photos import execute, photo_run

SEEDS = (0, 1, 2)


def table1_runs(seeds, quick=False, root=None):
    return [photo_run(decoder, r, seed, quick=quick, root=root)
            for r in (32, 16) for decoder in ("dupsampling", "bilinear") for seed in seeds]


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
        run_queue(table1_runs(args.seeds, args.quick, root), folders, execute, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
