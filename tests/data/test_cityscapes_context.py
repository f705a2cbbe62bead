"""Cityscapes id mapping and PASCAL Context loading, on tiny fake folders."""
import os

import numpy as np
import pytest
from PIL import Image

from tinyseg.data import DataError, build_dataset

# (raw label id, train id) for every id of cityscapesScripts' labels.py; 255 = not evaluated.
CITYSCAPES_IDS = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255,
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8,
    22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17,
    33: 18,
}


def write_cityscapes(root, split, frames, raw, with_images=True):
    """Write gtFine/<split>/<city>/..._gtFine_labelIds.png (and leftImg8bit) for each frame."""
    for frame in frames:
        city = frame.split("_")[0]
        label_dir = os.path.join(root, "gtFine", split, city)
        os.makedirs(label_dir, exist_ok=True)
        Image.fromarray(raw).save(os.path.join(label_dir, f"{frame}_gtFine_labelIds.png"))
        with open(os.path.join(label_dir, f"{frame}_gtFine_polygons.json"), "w") as f:
            f.write("{}")
        if with_images:
            image_dir = os.path.join(root, "leftImg8bit", split, city)
            os.makedirs(image_dir, exist_ok=True)
            image = np.zeros(raw.shape + (3,), dtype=np.uint8)
            Image.fromarray(image).save(os.path.join(image_dir, f"{frame}_leftImg8bit.png"))
    return str(root)


def all_raw_ids():
    """A 5x7 label map holding every raw id 0..33 once, plus 255."""
    return np.array(list(range(34)) + [255], dtype=np.uint8).reshape(5, 7)


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    frames = ["bonn_000001_000019", "aachen_000000_000019"]
    root = write_cityscapes(tmp_path, "train", frames, all_raw_ids())
    ds = build_dataset("cityscapes", root, "train")
    assert ds.num_classes == 19 and ds.class_names[0] == "road" and ds.class_names[18] == "bicycle"
    assert ds.ids == ["aachen/aachen_000000_000019", "bonn/bonn_000001_000019"]
    mask = ds.load_mask(1)
    expected = [CITYSCAPES_IDS[v] for v in range(34)] + [255]
    assert mask.ravel().tolist() == expected
    assert ds.load_image(0).shape == (5, 7, 3)
    assert ds.image_path(0).endswith(os.path.join("aachen", "aachen_000000_000019_leftImg8bit.png"))


def test_cityscapes_labels_only_and_errors(tmp_path):
    raw = all_raw_ids()
    raw[0, 0] = 40
    root = write_cityscapes(tmp_path, "val", ["ulm_000000_000001"], raw, with_images=False)
    ds = build_dataset("cityscapes", root, "val", labels_only=True)
    with pytest.raises(DataError, match=r"ulm_000000_000001_gtFine_labelIds\.png.*\[40\]"):
        ds.load_mask(0)
    with pytest.raises(DataError, match="leftImg8bit"):
        build_dataset("cityscapes", root, "val")
    with pytest.raises(DataError, match=os.path.join("gtFine", "train")):
        build_dataset("cityscapes", root, "train", labels_only=True)
    os.makedirs(os.path.join(root, "gtFine", "test", "berlin"))
    with pytest.raises(DataError, match="no \\*_gtFine_labelIds.png files"):
        build_dataset("cityscapes", root, "test", labels_only=True)


@pytest.mark.parametrize("suffix", ["", "VOCdevkit", os.path.join("VOCdevkit", "VOC2010")])
def test_context_60_classes(tmp_path, voc_writer, suffix):
    root = voc_writer(tmp_path, {"train": ["2008_000002", "2008_000003"], "val": ["2008_000008"]},
                      mask_values=(0, 12, 59, 255), year=2010,
                      mask_folder="SegmentationClassContext", list_folder="SegmentationContext")
    train = build_dataset("context", os.path.join(root, suffix), "train")
    assert train.num_classes == 60 and len(train.class_names) == 60
    assert train.class_names[0] == "background" and train.class_names[59] == "wood"
    assert len(train) == 2 and train.load_image(1).shape == (30, 40, 3)
    assert set(np.unique(train.load_mask(0)).tolist()) == {0, 12, 59, 255}


def test_context_rejects_ids_beyond_59(tmp_path, voc_writer):
    root = voc_writer(tmp_path, {"val": ["2008_000008"]}, mask_values=(0, 60), year=2010,
                      mask_folder="SegmentationClassContext", list_folder="SegmentationContext")
    ds = build_dataset("context", root, "val", labels_only=True)
    with pytest.raises(DataError, match=r"2008_000008\.png has values \[60\]"):
        ds.load_mask(0)
    with pytest.raises(DataError, match="SegmentationContext/train.txt"):
        build_dataset("context", root, "train")
