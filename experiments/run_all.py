"""Every run of every experiment, in the order of the issue, each once; then the report.

    python experiments/run_all.py                        # resumable: run it again after a kill
    python experiments/run_all.py --quick                # all of it in well under a minute

Two of these may run at once (e.g. one per core with OPENBLAS_NUM_THREADS=1): each claims the
run it works on, so they share the queue without doing a run twice.
"""
import sys

import pretrained
import projection
import table1_labels
import table1_photos
import temperature
from common import dedupe, experiment_main


def all_runs(seeds, quick=False, root=None):
    return dedupe(table1_labels.table1_runs(seeds, quick, root)
                  + table1_photos.table1_runs(seeds, quick, root)
                  + temperature.temperature_runs(seeds, quick, root)
                  + projection.projection_runs(seeds, quick, root)
                  + pretrained.pretrained_runs(seeds, quick, root))


def main(argv=None):
    def add_arguments(parser):
        parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")

    args, folders = experiment_main(__doc__, all_runs, projection.execute_any, argv, add_arguments)
    if not args.no_report:
        import report  # matplotlib is needed for the figures only
        report.write_report(folders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
