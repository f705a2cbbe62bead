"""predict.py on your own photos: outputs, EXIF orientation, legends, and bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinyseg.data import voc_palette
from tinyseg.evaluation import legend
from tinyseg.models import build_model
from tinyseg.training import save_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model = build_model("tiny_resnet", "bilinear", 21, 16, fuse=(), aspp_rates=(1, 2, 3))
    save_weights(model, str(path))
    return str(path)


def predict(*args):
    return subprocess.run([sys.executable, "predict.py", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def photo(path, size=(40, 30), orientation=None):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, size[::-1] + (3,), dtype=np.uint8))
    if orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation  # 6: the camera was turned; viewers rotate by 90 degrees
        image.save(path, exif=exif)


def test_every_image_of_a_folder_gets_labels_overlay_and_scores(tmp_path, checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / "a.jpg", (40, 30), orientation=6)
    photo(folder / "b.png", (23, 17))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = predict("--checkpoint", checkpoint, folder, "--out", out, "--save-scores",
                     "--scales", "0.75,1.0", "--flip", "--classes", "voc")
    assert result.returncode == 0, result.stderr
    labels = Image.open(out / "a.png")
    assert labels.mode == "P" and labels.size == (30, 40)  # upright: EXIF orientation applied
    scores = np.load(out / "a_scores.npy")
    assert scores.shape == (21, 40, 30)
    np.testing.assert_allclose(scores.sum(axis=0), 1, atol=1e-4)
    assert scores.dtype == np.float32 and np.array_equal(np.asarray(labels), scores.argmax(axis=0))
    overlay = Image.open(out / "b_overlay.png")
    assert overlay.width == 23 and overlay.height > 17  # the legend strip below
    assert sorted(os.listdir(out)) == ["a.png", "a_overlay.png", "a_scores.npy",
                                       "b.png", "b_overlay.png", "b_scores.npy"]


def test_a_bad_image_is_skipped_named_and_the_exit_code_says_so(tmp_path, checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = predict("--checkpoint", checkpoint, folder, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "good.png").exists()
    assert not (tmp_path / "out" / "broken.png").exists()


@pytest.mark.parametrize("args, message", [
    (["missing_folder"], "missing_folder: no such file or folder"),
    (["--scales", "0", "PHOTO"], "--scales must be comma-separated positive numbers"),
    (["--long-side", "-5", "PHOTO"], "--long-side must be a positive"),
    (["--classes", "cityscapes", "PHOTO"], "cityscapes has 19 classes, the model predicts 21"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, checkpoint, args, message):
    photo(tmp_path / "p.jpg")
    args = [str(tmp_path / "p.jpg") if a == "PHOTO" else a for a in args]
    if args[0] == "missing_folder":
        args = [str(tmp_path / "missing_folder")]
    result = predict("--checkpoint", checkpoint, "--out", tmp_path / "out", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_checkpoint_is_named(tmp_path):
    photo(tmp_path / "p.jpg")
    result = predict("--checkpoint", tmp_path / "none.npz", tmp_path / "p.jpg", "--out", tmp_path / "o")
    assert result.returncode == 2 and "none.npz" in result.stderr and "Traceback" not in result.stderr


def test_legend_lists_the_classes_present_in_rows_that_fit():
    picture = Image.new("RGB", (60, 20))
    one = legend(picture, [np.array([[0, 0], [255, 255]])], ["background", "cat"], voc_palette())
    two = legend(picture, [np.array([[0, 1]]), np.array([[2, 2]])], ["background", "cat", "dog"],
                 voc_palette())
    assert one.size == (60, 20 + 14 + 4)           # one entry: one row; void is not listed
    assert two.height > one.height                  # three entries do not fit in 60 px
    assert tuple(one.getpixel((5, 25))) == (0, 0, 0)  # background's swatch, VOC colour 0


def test_two_photos_of_one_name_or_an_out_among_the_inputs_are_refused(tmp_path, checkpoint):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        photo(tmp_path / folder / "img.jpg")
    clash = predict("--checkpoint", checkpoint, tmp_path / "x", tmp_path / "y", "--out", tmp_path / "o")
    assert clash.returncode == 2 and "would both write img.png" in clash.stderr
    into_input = predict("--checkpoint", checkpoint, tmp_path / "x", "--out", tmp_path / "x")
    assert into_input.returncode == 2 and "holds input photos" in into_input.stderr
    assert not (tmp_path / "o").exists() and sorted(os.listdir(tmp_path / "x")) == ["img.jpg"]
