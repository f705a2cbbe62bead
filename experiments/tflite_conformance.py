"""tinyseg running Google's TFLite MobileNetV2 files, against the LiteRT runtime on the same photos.

    python experiments/tflite_conformance.py            # results/tflite-conformance.json
    python experiments/tflite_conformance.py --images 20

1. The ImageNet classifier (mobilenet_v2_1.0_224_quant.tflite) imported into
   tinyseg.models.mobilenet.MobileNetV2Classifier (float32, dequantised weights) and run by
   LiteRT (int8 arithmetic) on the voc-animals-half photos, each resized to 224 x 224: how
   often the top-1 classes agree, how many of the top-5 are shared.
2. The whole DeepLabv3-MobileNetV2 PASCAL model (deeplabv3_mnv2_pascal_quant.tflite) converted
   by `python -m tinyseg.tflite` and scored by `evaluate.py --long-side 513` on the 230 val
   photos, beside LiteRT on the same photos (long side resized to 513, zero-padded to 513 x 513,
   prediction cropped and resized back with nearest neighbour, as the data README did).
Needs the test extra (ai-edge-litert, tflite).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from common import (COMMON_CLASSES, EXPERIMENTS, REPO, SHARED_DATA, VOC_ANIMALS, machine,
                    scores, write_json)
from tinyseg.autograd import Tensor, no_grad
from tinyseg.data import IMAGENET_MEAN, IMAGENET_STD, build_dataset
from tinyseg.metrics import ConfusionMatrix
from tinyseg.models.mobilenet import MobileNetV2Classifier
from tinyseg.tflite import load_tflite

FILES = os.path.join(SHARED_DATA, "imagenet-mobilenet")
CLASSIFIER = os.path.join(FILES, "mobilenet_v2_1.0_224_quant.tflite")
DEEPLAB = os.path.join(FILES, "deeplabv3_mnv2_pascal_quant.tflite")


def interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    runtime = Interpreter(model_path=path)
    runtime.allocate_tensors()
    return runtime, runtime.get_input_details()[0]["index"], runtime.get_output_details()[0]["index"]


def normalise(image):
    """(H, W, 3) uint8 -> (1, 3, H, W) float32, ImageNet-normalised as tinyseg's loaders do."""
    x = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return x.astype(np.float32).transpose(2, 0, 1)[None]


def classifier_agreement(dataset, count):
    """Top-1 agreement and top-5 overlap of tinyseg and LiteRT on `count` photos."""
    model = load_tflite(MobileNetV2Classifier(), CLASSIFIER).eval()
    runtime, inp, out = interpreter(CLASSIFIER)
    top1, top5, gaps = [], [], []
    for i in range(count):
        image = np.asarray(Image.fromarray(dataset.load_image(i)).resize((224, 224), Image.BILINEAR))
        runtime.set_tensor(inp, image[None])
        runtime.invoke()
        reference = runtime.get_tensor(out)[0].astype(np.float64) / 256   # uint8 probabilities
        with no_grad():
            logits = model(Tensor(normalise(image))).data[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top1.append(int(reference.argmax() == probs.argmax()))
        top5.append(len(set(np.argsort(-reference)[:5]) & set(np.argsort(-probs)[:5])))
        gaps.append(float(np.abs(reference - probs).max()))
    return dict(images=count, top1_agreement=float(np.mean(top1)), top5_overlap=float(np.mean(top5)),
                max_probability_difference_median=float(np.median(gaps)))


def litert_deeplab(dataset, count):
    """Scores of the DeepLab file run by LiteRT with the data README's protocol, and the share
    of pixels where tinyseg's converted model, fed the same 513 x 513 input, gives the same class."""
    from tinyseg.tflite import deeplab_from_tflite

    model = deeplab_from_tflite(DEEPLAB).eval()
    runtime, inp, out = interpreter(DEEPLAB)
    confusion, agreement = ConfusionMatrix(dataset.num_classes), []
    for i in range(count):
        image, mask = dataset[i]
        h, w = mask.shape
        scale = 513 / max(h, w)
        size = (round(w * scale), round(h * scale))
        padded = np.zeros((513, 513, 3), np.uint8)
        padded[:size[1], :size[0]] = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        runtime.set_tensor(inp, padded[None])
        runtime.invoke()
        labels = runtime.get_tensor(out)[0][:size[1], :size[0]].astype(np.uint8)
        confusion.update(np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST)), mask)
        with no_grad():
            ours = model(Tensor(normalise(padded))).data[0].argmax(axis=0)[:size[1], :size[0]]
        agreement.append(float((ours == labels).mean()))
    return dict(scores(confusion, dataset.class_names), pixel_agreement_mean=float(np.mean(agreement)),
                pixel_agreement_min=float(np.min(agreement)))


def tinyseg_deeplab(count):
    """Scores of the converted DeepLab file through the real command lines."""
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, summary = os.path.join(folder, "deeplab.npz"), os.path.join(folder, "scores.json")
        subprocess.run([sys.executable, "-m", "tinyseg.tflite", DEEPLAB, "--out", checkpoint],
                       check=True, cwd=REPO)
        subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--checkpoint", checkpoint,
                        "--dataset", "voc_aug", "--data-root", VOC_ANIMALS, "--long-side", "513",
                        "--max-images", str(count), "--json", summary], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        with open(summary) as f:
            result = json.load(f)
    per_class = result["per_class_iou"]
    common = [per_class[n] for n in COMMON_CLASSES if per_class.get(n) is not None]
    return dict(miou=result["miou"], miou_common=float(np.mean(common)), pixel_acc=result["pixel_acc"],
                per_class_iou=per_class)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="use the first N val photos only")
    parser.add_argument("--out", default=os.path.join(EXPERIMENTS, "results", "tflite-conformance.json"))
    args = parser.parse_args(argv)
    dataset = build_dataset("voc_aug", VOC_ANIMALS, "val")
    count = len(dataset) if args.images is None else min(args.images, len(dataset))
    result = dict(classifier=classifier_agreement(dataset, count),
                  deeplab=dict(litert=litert_deeplab(dataset, count), tinyseg=tinyseg_deeplab(count)),
                  images=count, machine=machine())
    write_json(args.out, result)
    c, d = result["classifier"], result["deeplab"]
    print(f"classifier: top-1 agreement {100 * c['top1_agreement']:.1f}% on {count} photos, "
          f"top-5 overlap {c['top5_overlap']:.2f} of 5")
    print(f"DeepLabv3 pixels with the same class (same 513 x 513 input): "
          f"{100 * d['litert']['pixel_agreement_mean']:.2f}% (lowest {100 * d['litert']['pixel_agreement_min']:.2f}%)")
    for name in ("litert", "tinyseg"):
        print(f"DeepLabv3 {name}: mIoU {100 * d[name]['miou']:.2f}% (7 common classes "
              f"{100 * d[name]['miou_common']:.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
