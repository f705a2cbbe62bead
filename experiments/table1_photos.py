"""Table 1, mIoU on real photos: bilinear vs DUpsampling at output strides 32 and 16.

    python experiments/table1_photos.py                  # every run missing a result
    python experiments/table1_photos.py --quick          # end to end in seconds, generated data

small_resnet from scratch on the 3,131 `train_aug` photos of ../shared/data/voc-animals-half,
scored on its 230 `val` photos (experiments/photos.py has the settings and the budget).
The paper's claims: DUpsampling beats bilinear at the same stride, and DUpsampling at OS 32 is
about as good as bilinear at OS 16 (72.09 vs 72.15) for a fraction of the multiply-adds.
Results: experiments/results/photos-<decoder>-os<r>-seed<s>.json.
"""
import sys

from common import experiment_main
from photos import execute, photo_run


def table1_runs(seeds, quick=False, root=None):
    return [photo_run(decoder, r, seed, quick=quick, root=root)
            for r in (32, 16) for decoder in ("dupsampling", "bilinear") for seed in seeds]


def main(argv=None):
    experiment_main(__doc__, table1_runs, execute, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
