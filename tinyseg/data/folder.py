"""Your own dataset, no code: a folder of images, masks, split lists and a class list.

    ROOT/
        classes.txt        one class name per line, class id 0 first (e.g. background)
          or classes.json  {"names": [...], "colours": [[r, g, b], ...], "ignore": 255}
                           (colours and ignore are optional: VOC's colours, void 255)
        images/<id>.jpg    the photos (.jpg, .jpeg or .png)
        masks/<id>.png     the labels: 8-bit grey or palette PNGs whose pixel values are class
                           ids 0..C-1, and the ignore value where a pixel has no label
        train.txt          the ids of the training images, one per line; val.txt likewise

`python train.py --dataset folder --data-root ROOT` then fits W by PCA on ROOT's own training
masks, as it does for VOC (W is always fitted for the data it will decode).

Masks exported as black and white (0 and 255) are common: 255 is then a class, not "void".
Masks that hold only 0 and 255, with 255 on a sizeable share of their pixels, are refused when
the dataset is opened, with a message saying so, unless `mask_values` says what the values mean
(`--mask-values 0:0,255:1`) or classes.json names the ignore value.
mask_values maps stored values to class ids (255: void); values it does not name stay as they are.
"""
import json
import os

import numpy as np

from .base import (IGNORE_INDEX, DataError, SegmentationDataset, read_label_file,
                   read_split_file, require_dir)
from .voc import voc_palette

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LAYOUT = "ROOT/classes.txt, ROOT/images/<id>.jpg, ROOT/masks/<id>.png, ROOT/<split>.txt"
BINARY_SHARE = 0.05  # a 0/255 mask with more 255 than this is taken for a binary export


def parse_mask_values(text):
    """'0:0,255:1' -> {0: 0, 255: 1}; a DataError naming --mask-values for anything else."""
    mapping = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        try:
            stored, label = (int(v) for v in pair.split(":"))
        except ValueError:
            stored = label = -1
        if not (0 <= stored <= 255 and 0 <= label <= 255):
            raise DataError(f"--mask-values: {pair!r} is not STORED:ID with both in 0..255 "
                            "(e.g. 0:0,255:1 for black-and-white masks)")
        mapping[stored] = label
    return mapping


def read_classes(root):
    """(names, palette, ignore value, whether the ignore value was given) from ROOT/classes.json
    or ROOT/classes.txt."""
    json_path, text_path = os.path.join(root, "classes.json"), os.path.join(root, "classes.txt")
    palette, ignore, explicit_ignore = voc_palette(), IGNORE_INDEX, False
    if os.path.isfile(json_path):
        try:
            with open(json_path, encoding="utf-8-sig") as f:
                spec = json.load(f)
            names = [str(n) for n in spec["names"]]
            colours = [[int(c) for c in colour] for colour in spec.get("colours", [])]
            if len(colours) > 256 or any(len(c) != 3 or not all(0 <= v <= 255 for v in c)
                                         for c in colours):
                raise ValueError("colours must be at most 256 [r, g, b] triples of 0..255")
            if colours:
                palette[:len(colours)] = colours
            ignore = int(spec.get("ignore", IGNORE_INDEX))
            explicit_ignore = "ignore" in spec
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"{json_path}: expected {{\"names\": [...], \"colours\": [[r, g, b], "
                            f"...], \"ignore\": 255}} ({type(error).__name__}: {error})") from None
    elif os.path.isfile(text_path):
        with open(text_path, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        raise DataError(f"no class list in {root}: write classes.txt, one class name per line, "
                        f"id 0 first (expected layout: {LAYOUT})")
    if len(names) < 2 or len(names) > 255 or not len(names) <= ignore <= 255:
        raise DataError(f"the class list of {root} has {len(names)} names and ignore {ignore}; "
                        f"expected 2 to 255 classes and an ignore value in {len(names)}..255 "
                        "(not a class id)")
    return names, palette, ignore, explicit_ignore


class FolderDataset(SegmentationDataset):
    """One split of a dataset in the folder layout of the module docstring."""

    def __init__(self, root, split, labels_only=False, mask_values=None):
        require_dir(root, LAYOUT)
        names, palette, ignore, explicit_ignore = read_classes(root)
        ids = read_split_file(os.path.join(root, f"{split}.txt"), LAYOUT)
        mask_dir, image_dir = os.path.join(root, "masks"), os.path.join(root, "images")
        require_dir(mask_dir, LAYOUT)
        image_paths = []
        if not labels_only:
            require_dir(image_dir, LAYOUT)
            files = {os.path.splitext(f)[0]: f for f in sorted(os.listdir(image_dir))
                     if f.lower().endswith(IMAGE_EXTENSIONS)}
            image_paths = [os.path.join(image_dir, files.get(i, f"{i}.jpg")) for i in ids]
        self.root = root
        self.lookup = np.arange(256, dtype=np.uint8)  # stored value -> class id (255: void)
        self.lookup[ignore] = IGNORE_INDEX
        for stored, label in (mask_values or {}).items():
            self.lookup[stored] = label
        super().__init__(name="folder", class_names=names, split=split, ids=ids,
                         image_paths=image_paths,
                         mask_paths=[os.path.join(mask_dir, f"{i}.png") for i in ids],
                         palette=palette, labels_only=labels_only)
        if not mask_values and not explicit_ignore:
            self._refuse_black_and_white()

    def _refuse_black_and_white(self, samples=20):
        """Before any work: a split whose masks hold only 0 and 255, with 255 on a sizeable
        share, is a black-and-white export read as mostly void (checked on up to `samples`
        masks spread over the split)."""
        raws = [read_label_file(self.mask_path(i))
                for i in np.linspace(0, len(self) - 1, min(samples, len(self))).astype(int)]
        counts = sum(np.bincount(raw.ravel(), minlength=256) for raw in raws)
        if counts[255] > BINARY_SHARE * counts.sum() and counts.sum() == counts[0] + counts[255]:
            raise DataError(f"the masks of {self.root} ({self.split}) hold only 0 and 255, and "
                            f"255 (void) covers {100 * counts[255] / counts.sum():.0f}% of them: if "
                            "255 marks a class (a black-and-white export), pass --mask-values "
                            "0:0,255:1; if it really is void, say so with \"ignore\": 255 in "
                            "classes.json")

    def decode_mask(self, raw, path):
        """Stored values -> class ids (and 255 for void)."""
        return self.lookup[raw]
