"""Datasets by name: `build_dataset("voc", root, "train")` and the table behind it.

    name         folder layout (ROOT = the --data-root)                 classes
    voc          ROOT/VOCdevkit/VOC2012, SegmentationClass/               21
    voc_aug      ROOT/VOCdevkit/VOC2012, SegmentationClassAug/,           21
                 train = train_aug.txt (10,582), val = val.txt
    context      ROOT/VOCdevkit/VOC2010, SegmentationClassContext/        60
    cityscapes   ROOT/gtFine, ROOT/leftImg8bit                            19
    synthetic    ROOT/VOCdevkit/VOC2012 written by synthetic.py, if absent 21
    folder       ROOT/images, ROOT/masks, ROOT/<split>.txt, ROOT/classes.txt  yours (folder.py)

Every dataset has the same interface (base.SegmentationDataset): name, num_classes,
class_names, ignore_index, ids, len(), load_image(i), load_mask(i), image_path(i),
mask_path(i). Code that needs the number of classes asks the dataset for it.
"""
from .base import DataError
from .cityscapes import CityscapesDataset
from .context import ContextDataset
from .folder import FolderDataset, parse_mask_values
from .synthetic import ensure_synthetic, read_marker
from .voc import VOCDataset

DATASET_NAMES = ("voc", "voc_aug", "context", "cityscapes", "synthetic", "folder")


def build_dataset(name, root, split, labels_only=False, mask_values=None):
    """The `split` of dataset `name` found in `root`; labels_only=True needs no images.

    mask_values ("0:0,255:1", the --mask-values option): what stored mask values mean, for the
    folder dataset (folder.py); the others have fixed encodings.

    "synthetic" generates its data in `root` first when no finished set is there (with the
    defaults of `ensure_synthetic`; run `python -m tinyseg.data.synthetic` for other sizes).
    """
    if mask_values and name != "folder":
        raise DataError(f"--mask-values is for --dataset folder; {name} has a fixed label encoding")
    if name == "folder":
        return FolderDataset(root, split, labels_only, parse_mask_values(mask_values))
    if name == "voc":
        return VOCDataset(root, split, labels_only)
    if name == "voc_aug":
        return VOCDataset(root, split, labels_only, aug=True)
    if name == "context":
        return ContextDataset(root, split, labels_only)
    if name == "cityscapes":
        return CityscapesDataset(root, split, labels_only)
    if name == "synthetic":
        if read_marker(root) is None:
            ensure_synthetic(root)
        return VOCDataset(root, split, labels_only, name="synthetic")
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
