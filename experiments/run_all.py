"""Every run of every experiment, in the order of the issue, each once; then the report.

    python experiments/run_all.py                        # resumable: run it again after a kill
    python experiments/run_all.py --quick                # all of it in well under a minute

Two of these may run at once (e.g. one per core with OPENBLAS_NUM_THREADS=1): each claims the
run it works on, so they share the queue without doing a run twice.
"""
import argparse
import sys

import numpy as np

import pretrained
import projection
import table1_labels
import table1_photos
import temperature
from common import Folders, dedupe, quick_data, run_queue, seeds_arg

SEEDS = (0, 1, 2)


def all_runs(seeds, quick=False, root=None):
    return dedupe(table1_labels.table1_runs(seeds, quick, root)
                  + table1_photos.table1_runs(seeds, quick, root)
                  + temperature.temperature_runs(seeds, quick, root)
                  + projection.projection_runs(seeds, quick, root)
                  + pretrained.pretrained_runs(seeds, quick, root))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings on generated data")
    parser.add_argument("--seeds", type=seeds_arg, default=SEEDS, help="comma-separated seeds")
    parser.add_argument("--only", default=None, help="run only the runs whose name contains this")
    parser.add_argument("--scratch", default=None, help="--quick: write here (default experiments/quick)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    args = parser.parse_args(argv)
    folders = Folders(args.quick, args.scratch)
    root = quick_data(folders) if args.quick else None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        missing = run_queue(all_runs(args.seeds, args.quick, root), folders, projection.execute_any,
                            args.only)
    if missing:
        print(f"{len(missing)} run(s) have no result yet (running in another queue, or waiting for "
              f"another run): {', '.join(missing)}")
    if not args.no_report:
        import report  # matplotlib is needed for the figures only
        report.write_report(folders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
