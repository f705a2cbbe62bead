"""Sec. 4.1.4 and Fig. 5: the adaptive temperature (T learned, from 1) vs T fixed at 1.

    python experiments/temperature.py                    # every run missing a result
    python experiments/temperature.py --quick            # end to end in seconds, generated data

The same network, seeds and data with only the temperature changed, on real photos (the
DUpsampling row at OS 16 of experiments/table1_photos.py, shared with it) and on the
label-only network of experiments/table1_labels.py (OS 16). The report plots both training
losses on one figure, T's trajectory, and the final mIoU (paper: 69.81 fixed vs 73.15 learned).
"""
import sys

import photos
import table1_labels
from common import experiment_main
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
    experiment_main(__doc__, temperature_runs, execute, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
