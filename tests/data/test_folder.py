"""The folder dataset (your own data, no code): layout, class lists, mask values, and train.py on it."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinyseg.data import DataError, build_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_folder(root, values=(0, 1, 2), classes=("background", "road", "car"), binary=False,
                count=6, size=(40, 32)):
    """count photos with masks: a rectangle of class values[1 + k % 2] on values[0]."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    ids = [f"img{k}" for k in range(count)]
    for k, name in enumerate(ids):
        mask = np.full(size[::-1], values[0], np.uint8)
        mask[8:24, 5 + k:25 + k] = 255 if binary else values[1 + k % 2]
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{name}.png")
        photo = rng.integers(0, 255, size[::-1] + (3,), dtype=np.uint8)
        Image.fromarray(photo).save(root / "images" / (f"{name}.png" if k % 2 else f"{name}.jpg"))
    (root / "train.txt").write_text("\n".join(ids[:4]) + "\n")
    (root / "val.txt").write_text("\n".join(ids[4:]) + "\n")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_a_folder_reads_like_any_dataset(tmp_path):
    root = make_folder(tmp_path / "mine")
    dataset = build_dataset("folder", str(root), "train")
    assert dataset.class_names == ["background", "road", "car"] and len(dataset) == 4
    image, mask = dataset[1]                      # a .png photo; img0 is a .jpg
    assert image.shape == (32, 40, 3) and set(np.unique(mask)) == {0, 2}


def test_classes_json_sets_colours_and_the_ignore_value(tmp_path):
    root = make_folder(tmp_path / "mine", values=(9, 1, 2), classes=("x", "road", "car"))
    (root / "classes.txt").unlink()
    (root / "classes.json").write_text(json.dumps(
        {"names": ["background", "road", "car"], "colours": [[1, 2, 3]], "ignore": 9}))
    dataset = build_dataset("folder", str(root), "val")
    assert tuple(dataset.palette[0]) == (1, 2, 3)
    assert set(np.unique(dataset.load_mask(0))) == {1, 255}   # stored 9 is void


def test_black_and_white_masks_are_refused_unless_their_values_are_given(tmp_path):
    root = make_folder(tmp_path / "mine", classes=("background", "object"), binary=True)
    with pytest.raises(DataError, match=r"only 0 and 255.*--mask-values 0:0,255:1"):
        build_dataset("folder", str(root), "train")
    mask = build_dataset("folder", str(root), "train", mask_values="0:0,255:1").load_mask(0)
    assert set(np.unique(mask)) == {0, 1}
    with pytest.raises(DataError, match="--mask-values: '255-1'"):
        build_dataset("folder", str(root), "train", mask_values="255-1")
    with pytest.raises(DataError, match="--mask-values is for --dataset folder"):
        build_dataset("voc", str(root), "train", mask_values="0:0")


def test_bad_colours_and_an_ignore_value_that_is_a_class_are_refused(tmp_path):
    root = make_folder(tmp_path / "mine")
    (root / "classes.txt").unlink()
    for spec, message in (({"names": ["a", "b", "c"], "colours": [[300, 0, 0]]}, "colours must be"),
                          ({"names": ["a", "b", "c"], "colours": [[1, 2]]}, "colours must be"),
                          ({"names": ["a", "b", "c"], "ignore": 1}, "not a class id")):
        (root / "classes.json").write_text(json.dumps(spec))
        with pytest.raises(DataError, match=message):
            build_dataset("folder", str(root), "train")


def test_missing_class_list_and_split_are_named(tmp_path):
    root = make_folder(tmp_path / "mine")
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="write classes.txt"):
        build_dataset("folder", str(root), "train")
    root = make_folder(tmp_path / "other")
    with pytest.raises(DataError, match="test.txt"):
        build_dataset("folder", str(root), "test")


def test_train_and_evaluate_on_a_folder_of_black_and_white_masks(tmp_path):
    root = make_folder(tmp_path / "mine", classes=("background", "object"), binary=True)
    common = ["--dataset", "folder", "--data-root", str(root), "--model", "tiny_resnet",
              "--output-stride", "8", "--batch-size", "2", "--crop", "32", "--workers", "0",
              "--iters", "2", "--val-every", "2", "--dim", "16"]
    refused = subprocess.run([sys.executable, "train.py", *common, "--out", str(tmp_path / "r0")],
                             capture_output=True, text=True, cwd=REPO)
    assert refused.returncode == 2 and "--mask-values 0:0,255:1" in refused.stderr
    assert not (tmp_path / "r0").exists()  # stopped before training: nothing half-written
    trained = subprocess.run([sys.executable, "train.py", *common, "--mask-values", "0:0,255:1",
                              "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=REPO)
    assert trained.returncode == 0, trained.stderr
    assert "fitting W by PCA on 4 folder train masks" in trained.stdout  # W fitted for this data
    scored = subprocess.run([sys.executable, "evaluate.py", "--checkpoint", str(tmp_path / "r" / "last.npz")],
                            capture_output=True, text=True, cwd=REPO)
    assert scored.returncode == 0, scored.stderr
    assert "object" in scored.stdout  # the user's class names in the report
