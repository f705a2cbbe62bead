"""Helpers for the data tests: tiny dataset folders written to tmp_path."""
import os

import numpy as np
import pytest
from PIL import Image


def write_voc(root, ids_by_split, size=(40, 30), mask_values=(0, 1, 255), year=2012,
              mask_folder="SegmentationClass", list_folder="Segmentation", image_ext="jpg"):
    """Write ROOT/VOCdevkit/VOC<year> with one random image and mask per id; return ROOT.

    size = (width, height); masks cycle through `mask_values` in horizontal bands.
    """
    folder = os.path.join(root, "VOCdevkit", f"VOC{year}")
    for sub in ("JPEGImages", mask_folder, os.path.join("ImageSets", list_folder)):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    for split, ids in ids_by_split.items():
        with open(os.path.join(folder, "ImageSets", list_folder, f"{split}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
        for i in ids:
            image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(image).save(os.path.join(folder, "JPEGImages", f"{i}.{image_ext}"))
            rows = np.arange(height)[:, None].repeat(width, axis=1) // 5
            mask = np.array(mask_values, dtype=np.uint8)[rows % len(mask_values)]
            Image.fromarray(mask).save(os.path.join(folder, mask_folder, f"{i}.png"))
    return str(root)


@pytest.fixture
def tiny_voc(tmp_path):
    """A VOC 2012 folder with 3 train and 2 val samples of 40x30 pixels; returns ROOT."""
    return write_voc(tmp_path / "tiny", {"train": ["a", "b", "c"], "val": ["d", "e"]})


@pytest.fixture
def voc_writer():
    """The `write_voc` function, for tests that need their own layout."""
    return write_voc
