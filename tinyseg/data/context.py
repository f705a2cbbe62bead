"""PASCAL Context, 60 classes: the 59 most frequent classes of the full labelling + background.

PASCAL Context labels every pixel of the VOC 2010 photos (400+ classes); the benchmark used by
the paper keeps the 59 most frequent and folds the rest into background (id 0). We read label
PNGs that already hold those 60 ids, in the layout produced by the usual conversion scripts
(the one mmsegmentation documents):

    ROOT/VOCdevkit/VOC2010/
        JPEGImages/<id>.jpg                        the VOC 2010 photos
        SegmentationClassContext/<id>.png          8-bit PNG, pixel value = id 0..59 (255 void)
        ImageSets/SegmentationContext/train.txt    4,998 ids; val.txt 5,105 ids

ROOT may also be `VOCdevkit/` itself or `VOCdevkit/VOC2010` itself.
"""
import os

from .base import SegmentationDataset, read_split_file, require_dir
from .voc import find_devkit_folder, voc_palette

CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)


class ContextDataset(SegmentationDataset):
    """PASCAL Context (60 classes) for one split ("train" or "val")."""

    def __init__(self, root, split, labels_only=False):
        layout = f"ROOT/VOCdevkit/VOC2010/ImageSets/SegmentationContext/{split}.txt"
        folder = find_devkit_folder(root, 2010, layout)
        ids = read_split_file(os.path.join(folder, "ImageSets", "SegmentationContext",
                                           f"{split}.txt"), layout)
        mask_dir = os.path.join(folder, "SegmentationClassContext")
        image_dir = os.path.join(folder, "JPEGImages")
        require_dir(mask_dir, "ROOT/VOCdevkit/VOC2010/SegmentationClassContext/<id>.png")
        if not labels_only:
            require_dir(image_dir, "ROOT/VOCdevkit/VOC2010/JPEGImages/<id>.jpg")
        self.root = folder
        super().__init__(
            name="context",
            class_names=CONTEXT_CLASSES,
            split=split,
            ids=ids,
            image_paths=[os.path.join(image_dir, f"{i}.jpg") for i in ids],
            mask_paths=[os.path.join(mask_dir, f"{i}.png") for i in ids],
            palette=voc_palette(),
            labels_only=labels_only,
        )
