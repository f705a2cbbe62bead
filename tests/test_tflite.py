"""MobileNetV2 and the TFLite importer: layout, dequantisation, batch-norm calibration, and the
real files in ../shared/data/imagenet-mobilenet against the LiteRT runtime (a test-only oracle)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tinyseg.functional as F
from tinyseg.autograd import Tensor, no_grad
from tinyseg.data import IMAGENET_MEAN, IMAGENET_STD, build_dataset
from tinyseg.models import build_model
from tinyseg.models.backbones import build_backbone
from tinyseg.models.mobilenet import MobileNetV2Classifier, pad_same
from tinyseg.tflite import TFLiteError, calibrate_batch_norm, dequantize, load_tflite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
FILES = os.path.join(SHARED, "imagenet-mobilenet")
CLASSIFIER = os.path.join(FILES, "mobilenet_v2_1.0_224_quant.tflite")
DEEPLAB = os.path.join(FILES, "deeplabv3_mnv2_pascal_quant.tflite")
ANIMALS = os.path.join(SHARED, "voc-animals-half")
needs_files = pytest.mark.skipif(not os.path.exists(DEEPLAB), reason="../shared/data/imagenet-mobilenet is absent")


def normalise(image):
    x = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return x.astype(np.float32).transpose(2, 0, 1)[None]


def litert(path):
    interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return (interpreter, interpreter.get_input_details()[0]["index"],
            interpreter.get_output_details()[0]["index"])


# ---------------------------------------------------------------- the network
@pytest.mark.parametrize("output_stride, last", [(8, (9, 13)), (16, (5, 7)), (32, (3, 4))])
def test_mobilenet_v2_strides_and_taps(output_stride, last):
    net = build_backbone("mobilenet_v2", output_stride)
    info = net.feature_info()
    assert info["conv"] == (32, 2) and info["expanded_conv_2/depthwise"] == (144, 4)
    assert info["expanded_conv_5"] == (32, 8) and info["expanded_conv_12"] == (96, min(16, output_stride))
    with no_grad():
        out, taps = net.eval()(Tensor(np.zeros((1, 3, 65, 97), np.float32)),
                               taps=("expanded_conv_2/depthwise",))
    assert out.shape == (1, 320) + last
    assert taps["expanded_conv_2/depthwise"].shape == (1, 144, 17, 25)
    dilations = [getattr(net, n).depthwise.dilation for n in net.unit_names]
    assert dilations[-1] == {8: 4, 16: 2, 32: 1}[output_stride]


@pytest.mark.parametrize("size, stride, kernel, dilation, expected", [
    (224, 2, 3, 1, (0, 1)), (513, 2, 3, 1, (1, 1)), (33, 1, 3, 2, (2, 2)), (7, 1, 1, 1, (0, 0))])
def test_pad_same_is_tensorflows(size, stride, kernel, dilation, expected):
    x = Tensor(np.ones((1, 1, size, size), np.float32))
    padded = pad_same(x, kernel, stride, dilation).data[0, 0]
    top, bottom = expected
    assert padded.shape == (size + top + bottom,) * 2
    assert padded[:top].sum() == 0 and padded[size + top:].sum() == 0
    span = dilation * (kernel - 1) + 1
    assert (padded.shape[0] - span) // stride + 1 == -(-size // stride)  # TF: ceil(n / s)


def test_flops_of_the_imagenet_classifier_are_the_papers():
    """MobileNetV2 (Sandler et al., Table 3): 300M multiply-adds, 3.4M parameters at 224 x 224."""
    from tinyseg import flops

    model = MobileNetV2Classifier()
    macs = sum(record.macs for record in flops.count(model, (224, 224)))
    assert abs(macs / 300e6 - 1) < 0.01, macs
    assert abs(model.num_parameters() / 3.5e6 - 1) < 0.02, model.num_parameters()


def test_dequantize_per_tensor_and_per_channel():
    q = np.array([[0, 128, 255], [10, 20, 30]], np.uint8)
    np.testing.assert_allclose(dequantize(q, [0.5], [128], 0), (q.astype(float) - 128) * 0.5)
    per_row = dequantize(q, [0.5, 2.0], [0, 10], 0)
    np.testing.assert_allclose(per_row, [[0, 64, 127.5], [0, 20, 40]])
    per_column = dequantize(q, [1.0, 2.0, 3.0], [0, 0, 0], 1)
    np.testing.assert_allclose(per_column, [[0, 256, 765], [10, 40, 90]])


def test_calibrated_batch_norm_keeps_eval_and_makes_training_mode_agree():
    model = build_model("mobilenet_v2", "bilinear", 21, 16, fuse=(), aspp_rates=(), head_channels=32)
    for name, value in model.state_dict().items():  # BN far from the batch's statistics
        if name.endswith("running_var"):
            value[:] = 3.0
        elif name.endswith("running_mean"):
            value[:] = 0.5
    images = np.random.default_rng(0).standard_normal((4, 3, 48, 64)).astype(np.float32)
    model.eval()
    with no_grad():
        before = model(Tensor(images)).data
    model.train()
    calibrate_batch_norm(model, images)
    assert model.training  # the mode the model was in is restored
    model.eval()
    with no_grad():
        after_eval = model(Tensor(images)).data
        model.train()
        after_train = model(Tensor(images)).data
    np.testing.assert_allclose(after_eval, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    np.testing.assert_allclose(after_train, before, rtol=1e-3, atol=1e-3 * np.abs(before).max())


def test_not_a_tflite_file_is_one_clear_error(tmp_path):
    pytest.importorskip("tflite")
    bad = tmp_path / "weights.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(TFLiteError, match="weights.tflite"):
        load_tflite(build_backbone("mobilenet_v2"), str(bad))


# ---------------------------------------------------------------- against LiteRT, real files
@needs_files
def test_imagenet_classifier_agrees_with_litert_on_real_photos():
    """int8 arithmetic (LiteRT) against float32 with the dequantised weights (tinyseg)."""
    pytest.importorskip("tflite")
    runtime, inp, out = litert(CLASSIFIER)
    model = load_tflite(MobileNetV2Classifier(), CLASSIFIER).eval()
    dataset = build_dataset("voc_aug", ANIMALS, "val")
    top1, top5 = [], []
    for i in range(0, 120, 4):  # 30 photos
        image = np.asarray(Image.fromarray(dataset.load_image(i)).resize((224, 224), Image.BILINEAR))
        runtime.set_tensor(inp, image[None])
        runtime.invoke()
        reference = runtime.get_tensor(out)[0].astype(np.float64)  # uint8: -x would wrap around
        with no_grad():
            logits = model(Tensor(normalise(image))).data[0]
        top1.append(reference.argmax() == logits.argmax())
        top5.append(len(set(np.argsort(-reference)[:5]) & set(np.argsort(-logits)[:5])))
    assert np.mean(top1) >= 0.9, np.mean(top1)
    assert np.mean(top5) >= 4.0, np.mean(top5)


@needs_files
def test_deeplab_model_matches_litert_pixel_for_pixel_on_real_photos():
    pytest.importorskip("tflite")
    from tinyseg.tflite import deeplab_from_tflite

    runtime, inp, out = litert(DEEPLAB)
    model = deeplab_from_tflite(DEEPLAB).eval()
    dataset = build_dataset("voc_aug", ANIMALS, "val")
    for i in (0, 7):
        image = dataset.load_image(i)
        h, w = image.shape[:2]
        size = (round(w * 513 / max(h, w)), round(h * 513 / max(h, w)))
        padded = np.zeros((513, 513, 3), np.uint8)
        padded[:size[1], :size[0]] = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        runtime.set_tensor(inp, padded[None])
        runtime.invoke()
        reference = runtime.get_tensor(out)[0]
        with no_grad():
            labels = model(Tensor(normalise(padded))).data[0].argmax(axis=0)
        assert labels.shape == (513, 513)
        agreement = (labels == reference)[:size[1], :size[0]].mean()
        assert agreement >= 0.97, agreement


@needs_files
def test_converted_deeplab_runs_through_evaluate_py(tmp_path):
    pytest.importorskip("tflite")
    checkpoint, summary = tmp_path / "deeplab.npz", tmp_path / "scores.json"
    convert = subprocess.run([sys.executable, "-m", "tinyseg.tflite", DEEPLAB, "--out", str(checkpoint)],
                             capture_output=True, text=True, cwd=REPO)
    assert convert.returncode == 0, convert.stderr
    scored = subprocess.run([sys.executable, "evaluate.py", "--checkpoint", str(checkpoint),
                             "--dataset", "voc_aug", "--data-root", ANIMALS, "--long-side", "513",
                             "--max-images", "3", "--json", str(summary)],
                            capture_output=True, text=True, cwd=REPO)
    assert scored.returncode == 0, scored.stderr
    result = json.loads(summary.read_text())
    assert result["per_class_iou"]["background"] > 0.85
    assert result["long_side"] == 513


@needs_files
def test_converting_the_classifier_says_it_is_not_a_deeplab_model(tmp_path):
    pytest.importorskip("tflite")
    process = subprocess.run([sys.executable, "-m", "tinyseg.tflite", CLASSIFIER, "--out",
                              str(tmp_path / "x.npz")], capture_output=True, text=True, cwd=REPO)
    assert process.returncode == 2 and "not a DeepLabv3 model" in process.stderr
    assert "Traceback" not in process.stderr


def test_convert_command_names_a_missing_file(tmp_path):
    pytest.importorskip("tflite")
    process = subprocess.run([sys.executable, "-m", "tinyseg.tflite", str(tmp_path / "none.tflite"),
                              "--out", str(tmp_path / "x.npz")], capture_output=True, text=True, cwd=REPO)
    assert process.returncode == 2
    assert "none.tflite" in process.stderr and "Traceback" not in process.stderr


@needs_files
def test_train_py_fine_tunes_from_the_tflite_classifier(tmp_path):
    """--pretrained FILE.tflite: the backbone is imported and its batch norm calibrated on batch 0."""
    pytest.importorskip("tflite")
    out = tmp_path / "run"
    process = subprocess.run(
        [sys.executable, "train.py", "--model", "mobilenet_v2", "--decoder", "bilinear",
         "--fuse", "", "--pretrained", CLASSIFIER, "--output-stride", "16", "--data-root",
         str(tmp_path / "synthetic"), "--iters", "2", "--batch-size", "2", "--crop", "64",
         "--val-every", "0", "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert process.returncode == 0, process.stdout[-1500:] + process.stderr[-1500:]
    from tinyseg.training import model_from_checkpoint

    model, _ = model_from_checkpoint(str(out / "last.npz"))
    imported = load_tflite(build_backbone("mobilenet_v2"), CLASSIFIER)
    stem = model.backbone.conv.conv.weight.data
    # two SGD steps moved the weights only a little away from the file's
    assert np.abs(stem - imported.conv.conv.weight.data).max() < 0.05 * np.abs(stem).max()
    # calibrated: gamma = sqrt(var + eps) of batch 0's statistics, not the identity's 1 (two
    # SGD steps could not move it that far)
    assert np.abs(model.backbone.expanded_conv_5.project.bn.weight.data - 1).mean() > 0.2
