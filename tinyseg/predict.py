"""Segment your own photos: `python predict.py --checkpoint RUN/best.npz PHOTO_OR_FOLDER ... --out DIR`.

For every image (any size; the EXIF orientation a camera wrote is applied first, as a viewer
shows the photo) it writes, in DIR:

    NAME.png           the class id of every pixel, as an 8-bit palette PNG (a label map)
    NAME_overlay.png   the photo with the classes painted over it, and a legend of those present
    NAME_scores.npy    with --save-scores: the class probabilities, float32 (C, H, W)

Prediction is evaluate.py's: probabilities averaged over --scales (and --flip), at the photo's
own resolution (tinyseg.evaluation.predict). Class names and colours come from the dataset the
run was trained on (its config.json), or --classes.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageOps

from .data import DataError
from .data.cityscapes import CITYSCAPES_CLASSES, cityscapes_palette
from .data.context import CONTEXT_CLASSES
from .data.folder import read_classes
from .data.transforms import EvalTransform
from .data.voc import VOC_CLASSES, voc_palette
from .evaluation import colorize, legend, parse_scales, predict
from .progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CLASS_SETS = {"voc": (VOC_CLASSES, voc_palette), "context": (CONTEXT_CLASSES, voc_palette),
              "cityscapes": (CITYSCAPES_CLASSES, cityscapes_palette)}
DATASET_CLASSES = {"voc": "voc", "voc_aug": "voc", "synthetic": "voc", "context": "context",
                   "cityscapes": "cityscapes"}


def _folder_palette(root, default):
    """The colours of a folder dataset's classes.json, where it can still be read."""
    try:
        return read_classes(root)[1]
    except (DataError, OSError, TypeError):
        return default


def output_stems(images, out):
    """NAME of every image's outputs; a DataError for two images of one name, or an --out that
    is one of the input folders (its label maps would be read as photos next time)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in images]
    seen = {}
    for path, stem in zip(images, stems):
        if stem in seen:
            raise DataError(f"{seen[stem]} and {path} would both write {stem}.png: rename one, or "
                            "segment them into different --out folders")
        seen[stem] = path
    folders = {os.path.realpath(os.path.dirname(path)) for path in images}
    if os.path.realpath(out) in folders:
        raise DataError(f"--out {out} holds input photos: write the results to another folder")
    return stems


def find_images(paths):
    """The image files named, and those directly inside the folders named, in order."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not inside:
                raise DataError(f"{path}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
            found += [os.path.join(path, f) for f in inside]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return found


def read_photo(path):
    """(H, W, 3) uint8 RGB, upright as the camera's EXIF orientation says."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None


def class_set(name, num_classes):
    """(names, palette) for `num_classes` classes: a named set, else generic names, VOC colours."""
    if name is not None:
        names, palette = CLASS_SETS[name]
        if len(names) != num_classes:
            raise ValueError(f"--classes {name} has {len(names)} classes, the model predicts {num_classes}")
        return list(names), palette()
    return [f"class {k}" for k in range(num_classes)], voc_palette()


def overlay(photo, labels, names, palette, alpha=0.5):
    """The photo with each pixel blended with its class colour, and a legend below."""
    colours = np.asarray(colorize(labels, palette).convert("RGB"), np.float32)
    blended = (1 - alpha) * photo.astype(np.float32) + alpha * colours
    return legend(Image.fromarray(blended.astype(np.uint8)), labels, names, palette)


def main(argv=None):
    from .autograd import no_grad
    from .backend import BackendError, device_name, to_numpy
    from .cli import add_backend_arguments, setup_backend
    from .nn import StateDictError
    from .run import model_from_checkpoint, read_run_settings

    parser = argparse.ArgumentParser(prog="python predict.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--checkpoint", required=True, help="a .npz written by train.py (or python -m tinyseg.tflite)")
    parser.add_argument("--out", required=True, help="folder for the label maps and overlays")
    add_backend_arguments(parser)
    parser.add_argument("--scales", default="1.0", help="comma-separated test scales")
    parser.add_argument("--flip", action="store_true", help="also average over left-right flips")
    parser.add_argument("--long-side", type=int, default=None,
                        help="resize each image so its longer side has this many pixels first "
                             "(513 for TensorFlow DeepLab models)")
    parser.add_argument("--classes", default=None, choices=sorted(CLASS_SETS),
                        help="class names and colours (default: the run's dataset, else generic names)")
    parser.add_argument("--save-scores", action="store_true", help="also write NAME_scores.npy")
    args = parser.parse_args(argv)
    try:
        scales = parse_scales(args.scales)
        if args.long_side is not None and args.long_side < 1:
            raise ValueError(f"--long-side must be a positive number of pixels, got {args.long_side}")
        images = find_images(args.images)
        stems = output_stems(images, args.out)
        xp = setup_backend(args)
        model, meta = model_from_checkpoint(args.checkpoint)
        model.to(device_name(xp)).eval()
        trained = read_run_settings(args.checkpoint)
        names, palette = class_set(args.classes or DATASET_CLASSES.get(trained.get("dataset")),
                                   model.num_classes)
        if args.classes is None and len(meta.get("class_names") or ()) == model.num_classes:
            names = list(meta["class_names"])  # what the run was trained on (train.py saves them)
        if args.classes is None and trained.get("dataset") == "folder":
            palette = _folder_palette(trained.get("data_root"), palette)
        os.makedirs(args.out, exist_ok=True)
    except KeyboardInterrupt:
        return 130
    except (BackendError, DataError, StateDictError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    progress, failed = Progress("predicting"), []
    transform = EvalTransform()
    for done, (path, name) in enumerate(zip(images, stems), start=1):
        try:
            photo = read_photo(path)
            normalised, _ = transform(photo, np.zeros(photo.shape[:2], np.uint8))
            base = 1.0 if args.long_side is None else args.long_side / max(photo.shape[:2])
            with no_grad():
                probs = to_numpy(predict(model, xp.asarray(normalised), [base * s for s in scales],
                                         args.flip))                       # (C, H, W)
            labels = probs.argmax(axis=0).astype(np.uint8)
            stem = os.path.join(args.out, name)
            colorize(labels, palette).save(stem + ".png")
            overlay(photo, labels, names, palette).save(stem + "_overlay.png")
            if args.save_scores:
                np.save(stem + "_scores.npy", probs.astype(np.float32))
        except KeyboardInterrupt:
            print(f"interrupted after {done - 1} of {len(images)} images", file=sys.stderr)
            return 130
        except (DataError, OSError) as error:
            print(f"skipped: {error}", file=sys.stderr)
            failed.append(path)
        progress(done, len(images))
    print(f"{len(images) - len(failed)} of {len(images)} images segmented into {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
