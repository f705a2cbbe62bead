"""Cityscapes (fine annotations): the 34 raw label ids mapped to the 19 evaluated train ids.

Expected layout (as downloaded, gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip):

    ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

An id is "<city>/<city>_<seq>_<frame>"; a split is every labelIds file under gtFine/<split>.
The labelIds PNGs store the raw ids 0..33 of cityscapesScripts' `labels.py`; training and
evaluation use 19 of them ("train ids" 0..18) and treat the rest as void (255).
"""
import os

import numpy as np

from .base import DataError, IGNORE_INDEX, SegmentationDataset, require_dir

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Raw label id of each train id, in train-id order (cityscapesScripts labels.py).
TRAIN_ID_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
NUM_LABEL_IDS = 34

CITYSCAPES_COLOURS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def label_id_to_train_id_table():
    """A 256-entry lookup table: table[raw label id] = train id, 255 for every other value."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, label_id in enumerate(TRAIN_ID_TO_LABEL_ID):
        table[label_id] = train_id
    return table


def cityscapes_palette():
    """(256, 3) uint8: the official colour of each train id, black for the rest."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(CITYSCAPES_COLOURS)] = CITYSCAPES_COLOURS
    return palette


class CityscapesDataset(SegmentationDataset):
    """Cityscapes gtFine for one split ("train", "val"), masks in train ids."""

    def __init__(self, root, split, labels_only=False):
        label_layout = "ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"
        image_layout = "ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png"
        if not os.path.isdir(root):
            raise DataError(f"data root not found: {root} (expected layout: {label_layout})")
        label_dir = os.path.join(root, "gtFine", split)
        image_dir = os.path.join(root, "leftImg8bit", split)
        require_dir(label_dir, label_layout)
        if not labels_only:
            require_dir(image_dir, image_layout)
        suffix = "_gtFine_labelIds.png"
        ids = sorted(f"{city}/{name[:-len(suffix)]}"
                     for city in os.listdir(label_dir)
                     if os.path.isdir(os.path.join(label_dir, city))
                     for name in os.listdir(os.path.join(label_dir, city))
                     if name.endswith(suffix))
        if not ids:
            raise DataError(f"no *{suffix} files in {label_dir} (expected layout: {label_layout})")
        self.root = root
        self._table = label_id_to_train_id_table()
        super().__init__(
            name="cityscapes",
            class_names=CITYSCAPES_CLASSES,
            split=split,
            ids=ids,
            image_paths=[os.path.join(image_dir, f"{i}_leftImg8bit.png") for i in ids],
            mask_paths=[os.path.join(label_dir, f"{i}{suffix}") for i in ids],
            palette=cityscapes_palette(),
            labels_only=labels_only,
        )

    def decode_mask(self, raw, path):
        """Raw label ids (0..33; 255 void) -> train ids (0..18; 255 for the rest)."""
        bad = np.setdiff1d(np.unique(raw), [*range(NUM_LABEL_IDS), IGNORE_INDEX])
        if bad.size:
            raise DataError(f"mask {path} has values {bad.tolist()}, which are not Cityscapes "
                            f"label ids (0..{NUM_LABEL_IDS - 1}, or 255)")
        return self._table[raw]
