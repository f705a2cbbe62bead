"""Part 1's photo comparisons again, from an ImageNet start: MobileNetV2 fine-tuned from the
TFLite classifier in ../shared/data/imagenet-mobilenet (issue 16; experiments/photos.py).

    python experiments/pretrained.py                     # every run missing a result
    python experiments/pretrained.py --quick             # end to end in seconds, generated data

Rows: bilinear vs DUpsampling at output strides 32 and 16; T learned vs fixed; W by PCA vs
learned. Same data, crops, iterations and seeds as the from-scratch rows, lr 0.007 (the
paper's fine-tuning rate); the report puts them beside the from-scratch rows. Last, the
DUpsampling decoder (OS 16) on the backbone of the DeepLabv3-MobileNetV2 PASCAL model,
fine-tuned from it. Results: experiments/results/{mnv2,dlv3}-photos-*.json.
"""
import os
import sys

from common import experiment_main
from photos import DEEPLAB_MOBILENET, IMAGENET_MOBILENET, execute, photo_run


def pretrained_runs(seeds, quick=False, root=None):
    """The runs of this experiment; none (with a note) where the TFLite file is absent."""
    missing = [path for path in (IMAGENET_MOBILENET, DEEPLAB_MOBILENET) if not os.path.exists(path)]
    if missing:
        print(f"pretrained runs left out: {', '.join(missing)} not found")
        return []
    runs = [photo_run(decoder, r, seed, quick=quick, root=root, pretrained="imagenet")
            for r in (32, 16) for decoder in ("dupsampling", "bilinear") for seed in seeds]
    runs += [photo_run("dupsampling", 16, seed, "fixed", quick=quick, root=root, pretrained="imagenet")
             for seed in seeds]
    runs += [photo_run("dupsampling", 16, seed, w_source="learned", quick=quick, root=root,
                       pretrained="imagenet") for seed in seeds]
    runs += [photo_run("dupsampling", 16, seed, quick=quick, root=root, pretrained="deeplab")
             for seed in seeds]
    return runs


def main(argv=None):
    experiment_main(__doc__, pretrained_runs, execute, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
