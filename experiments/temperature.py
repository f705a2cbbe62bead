"""Sec. 4.1.4 and Fig. 5: the adaptive temperature (T learned, from 1) vs T fixed at 1.

    python experiments/temperature.py                    # every run missing a result
    python experiments/temperature.py --quick            # end to end in seconds, generated data

The same network, seeds and data with only the temperature changed, on real photos (the
DUpsampling row at OS 16 of experiments/table1_photos.py, shared with it) and on the
label-only network of experiments/table1_labels.py (OS 16). The report plots both training
losses on one figure, T's trajectory, and the final mIoU (paper: 69.81 fixed vs 73.15 learned).
"""
import argparse
import sys

import numpy as np

import photos
import table1_labels
from common import Folders, quick_data, run_queue, seeds_arg

SEEDS = (0, 1, 2)
EXECUTORS = {"labels": table1_labels.execute, "photos": photos.execute}


def execute(run, folders, clock):
    return EXECUTORS[run["kind"]](run, folders, clock)


def temperature_runs(seeds, quick=False, root=None):
    runs = []
    for temperature in ("fixed", "learned"):
        runs += [photos.photo_run("dupsampling", 16, seed, temperature, quick=quick, root=root)
                 for seed in seeds]
        runs += [table1_labels.label_run("dupsampling", 16, seed, temperature, quick, root)
                 for seed in seeds]
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
        run_queue(temperature_runs(args.seeds, args.quick, root), folders, execute, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
