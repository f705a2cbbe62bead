"""The synthetic VOC: deterministic bytes, VOC layout read back by the VOC loader, caching."""
import colorsys
import json
import os

import numpy as np
import pytest
from PIL import Image

from tinyseg.data import DataError, build_dataset, ensure_synthetic, voc_palette
from tinyseg.data.synthetic import class_appearance, hsv_to_rgb, main, make_sample, void_borders

SMALL = dict(num_train=6, num_val=3, size=(48, 40))


def all_files(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_same_seed_gives_identical_bytes(tmp_path):
    first = all_files(ensure_synthetic(str(tmp_path / "a"), seed=3, **SMALL))
    second = all_files(ensure_synthetic(str(tmp_path / "b"), seed=3, **SMALL))
    other = all_files(ensure_synthetic(str(tmp_path / "c"), seed=4, **SMALL))
    assert len(first) == 6 + 3 + 6 + 3 + 3 + 1  # jpg, png per sample, 3 lists, marker
    assert first == second
    images = [name for name in first if name.endswith(".jpg")]
    assert all(first[name] != other[name] for name in images)


def test_layout_reads_back_through_the_voc_loader(tmp_path):
    root = ensure_synthetic(str(tmp_path), seed=0, **SMALL)
    train = build_dataset("synthetic", root, "train")
    voc_view = build_dataset("voc", root, "val")
    trainval = build_dataset("voc", root, "trainval")
    assert (train.name, train.num_classes, len(train), len(voc_view), len(trainval)) == \
        ("synthetic", 21, 6, 3, 9)
    void_seen = False
    for i in range(len(train)):
        image, mask = train[i]
        assert image.shape == (40, 48, 3) and mask.shape == (40, 48)
        assert set(np.unique(mask).tolist()) <= set(range(21)) | {255}
        void_seen |= bool((mask == 255).any())
    assert void_seen
    with Image.open(train.mask_path(0)) as im:
        assert im.mode == "P"
        assert im.getpalette()[:3 * 21] == voc_palette()[:21].ravel().tolist()


def test_build_dataset_generates_once_and_reuses(tmp_path, monkeypatch):
    root = str(tmp_path)
    ds = build_dataset("synthetic", root, "val")
    assert len(ds) == 60 and ds.load_image(0).shape == (120, 160, 3)  # the defaults
    import tinyseg.data.synthetic as synthetic

    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(synthetic, "generate_synthetic", fail)
    assert ensure_synthetic(root) == root
    assert len(build_dataset("synthetic", root, "train")) == 300


def test_interrupted_generation_is_redone(tmp_path):
    root = str(tmp_path)
    ensure_synthetic(root, **SMALL)
    marker = os.path.join(root, "synthetic.json")
    with open(marker) as f:
        record = json.load(f)
    record["complete"] = False
    with open(marker, "w") as f:
        json.dump(record, f)
    mask_file = os.path.join(root, "VOCdevkit", "VOC2012", "SegmentationClass", "val_00002.png")
    os.remove(mask_file)
    ensure_synthetic(root, **SMALL)
    assert os.path.isfile(mask_file)
    with open(marker) as f:
        assert json.load(f)["complete"] is True


def test_foreign_vocdevkit_is_not_overwritten(tmp_path, voc_writer):
    root = voc_writer(tmp_path, {"train": ["x"]})
    with pytest.raises(DataError, match="not tinyseg's synthetic data"):
        ensure_synthetic(root, **SMALL)


def test_command_line(tmp_path, capsys, voc_writer):
    out = str(tmp_path / "cli")
    assert main(["--out", out, "--num-train", "2", "--num-val", "1", "--size", "32x24"]) == 0
    ds = build_dataset("voc", out, "train")
    assert len(ds) == 2 and ds.load_image(1).shape == (24, 32, 3)
    foreign = voc_writer(tmp_path / "real", {"train": ["x"]})
    assert main(["--out", foreign]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_void_borders_mark_both_sides_of_an_edge():
    labels = np.zeros((5, 6), dtype=np.uint8)
    labels[:, 3:] = 7
    mask = void_borders(labels, radius=1)
    np.testing.assert_array_equal(mask[:, :2], 0)
    np.testing.assert_array_equal(mask[:, 2:4], 255)
    np.testing.assert_array_equal(mask[:, 4:], 7)


def test_class_is_written_in_its_hue_and_tone():
    """Inside every shape, the median hue and the mean brightness are those of its class."""
    rng = np.random.default_rng(1)
    checked = set()
    for _ in range(30):
        image, mask = make_sample(rng, 96, 80)
        hsv = np.asarray(Image.fromarray(image).convert("HSV")) / 255.0  # (H, W, 3) in [0, 1]
        for label in set(np.unique(mask).tolist()) - {0, 255}:
            hue, value = hsv[..., 0][mask == label], hsv[..., 2][mask == label]
            if hue.size < 50:
                continue
            class_hue, brightness, _ = class_appearance(label)
            offset = (hue - class_hue + 0.5) % 1.0 - 0.5  # circular difference of hues
            assert abs(np.median(offset)) < 0.05, label
            assert abs(value.mean() - brightness) < 0.1, label
            checked.add(label)
    assert len(checked) >= 15


def test_hsv_to_rgb_matches_colorsys():
    rng = np.random.default_rng(0)
    h, s, v = rng.uniform(0, 1, (3, 4, 6))
    expected = [[colorsys.hsv_to_rgb(h[i, j], s[i, j], v[i, j]) for j in range(6)] for i in range(4)]
    np.testing.assert_allclose(hsv_to_rgb(h, s, v), np.array(expected), atol=1e-12)


def test_light_and_dark_classes_of_the_same_hue_differ_in_brightness(tmp_path):
    root = ensure_synthetic(str(tmp_path / "s"), num_train=40, num_val=1, size=(64, 48), seed=0)
    dataset = build_dataset("synthetic", root, "train")
    total, count = np.zeros(21), np.zeros(21)
    for i in range(len(dataset)):
        image, mask = dataset[i]
        brightness = image.max(axis=2).astype(np.float64)  # HSV value
        for label in range(1, 21):
            total[label] += brightness[mask == label].sum()
            count[label] += (mask == label).sum()
    mean = total / np.maximum(count, 1)
    light, dark = mean[1:11], mean[11:21]
    seen = (count[1:11] > 0) & (count[11:21] > 0)
    assert seen.sum() >= 5
    assert (light[seen] - dark[seen] > 50).all(), (light, dark)
