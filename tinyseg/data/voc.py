"""PASCAL VOC 2012 segmentation: 20 object classes plus background, void borders of 255.

Expected layout (ROOT is what `--data-root` names):

    ROOT/VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg                  the photos (not needed with labels_only=True)
        SegmentationClass/<id>.png           "voc": the official masks, 8-bit palette PNGs
        SegmentationClassAug/<id>.png        "voc_aug": VOC + SBD masks (the paper's 10,582)
        ImageSets/Segmentation/train.txt     one id per line; also val.txt, trainval.txt
        ImageSets/Segmentation/train_aug.txt the "voc_aug" training list

ROOT may also be `VOCdevkit/` itself or `VOCdevkit/VOC2012` itself. The palette PNGs store
the class id as each pixel's value (the palette only colours it for viewing), so the mask is
read as it is: 0 = background, 1..20 = the classes below, 255 = void.
"""
import os

import numpy as np

from .base import DataError, SegmentationDataset, read_split_file, require_dir

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette():
    """The VOC colour map, (256, 3) uint8: id 0 black, 1 dark red, ..., 255 cream.

    Each id's bits are dealt out round-robin to the high bits of R, G and B, so neighbouring
    ids get very different colours.
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        value, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[label] = (r, g, b)
    return palette


def find_devkit_folder(root, year, layout):
    """The VOC<year> folder for a ROOT that holds VOCdevkit/, or is VOCdevkit/ or VOC<year>/.

    A folder counts when it has ImageSets/; `layout` is the expected path, for the message.
    """
    if os.path.isfile(root):
        raise DataError(f"data root {root} is a file, not a folder (expected layout: {layout})")
    if not os.path.isdir(root):
        raise DataError(f"data root not found: {root} (expected layout: {layout})")
    for folder in (os.path.join(root, "VOCdevkit", f"VOC{year}"),
                   os.path.join(root, f"VOC{year}"),
                   root):
        if os.path.isdir(os.path.join(folder, "ImageSets")):
            return folder
    raise DataError(f"no VOCdevkit/VOC{year} folder with ImageSets/ in {root} "
                    f"(expected layout: {layout})")


class VOCDataset(SegmentationDataset):
    """VOC 2012 masks (and images) for one split.

    aug=False reads SegmentationClass/ and ImageSets/Segmentation/<split>.txt ("voc");
    aug=True reads SegmentationClassAug/, with split "train" meaning train_aug.txt and any
    other split (val) read from <split>.txt ("voc_aug").
    """

    def __init__(self, root, split, labels_only=False, aug=False, name=None):
        mask_folder = "SegmentationClassAug" if aug else "SegmentationClass"
        list_name = "train_aug" if aug and split in ("train", "train_aug") else split
        layout = f"ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/{list_name}.txt"
        folder = find_devkit_folder(root, 2012, layout)
        ids = read_split_file(os.path.join(folder, "ImageSets", "Segmentation", f"{list_name}.txt"),
                              layout)
        mask_dir = os.path.join(folder, mask_folder)
        image_dir = os.path.join(folder, "JPEGImages")
        require_dir(mask_dir, f"ROOT/VOCdevkit/VOC2012/{mask_folder}/<id>.png")
        if not labels_only:
            require_dir(image_dir, "ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg; "
                                   "to read the masks alone, use labels_only=True")
        self.root = folder
        super().__init__(
            name=name or ("voc_aug" if aug else "voc"),
            class_names=VOC_CLASSES,
            split=split,
            ids=ids,
            image_paths=[os.path.join(image_dir, f"{i}.jpg") for i in ids],
            mask_paths=[os.path.join(mask_dir, f"{i}.png") for i in ids],
            palette=voc_palette(),
            labels_only=labels_only,
        )
