"""Evaluation: multi-scale + flip prediction, mIoU over a dataset, and pictures to look at.

The paper's test protocol averages class probabilities over several input scales
(0.5 ... 1.75) and their left-right flips, then takes the argmax at the original resolution:

    P(c | pixel) = mean over (scale, flip) of  resize_back(softmax(model(resize(image, scale))))

mIoU is then read from a confusion matrix accumulated over the whole split (tinyseg.metrics).
"""
import os

import numpy as np
from PIL import Image, ImageDraw

from . import functional as F
from .autograd import Tensor, no_grad
from .backend import to_numpy
from .data import EvalTransform
from .metrics import ConfusionMatrix


def parse_scales(text):
    """'0.75,1.0' -> [0.75, 1.0] (the --scales option); a ValueError naming it for anything else."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        scales = []
    if not scales or not all(0 < s < float("inf") for s in scales):
        raise ValueError(f"--scales must be comma-separated positive numbers, e.g. 0.75,1.0,1.25; "
                         f"got {text!r}")
    return scales


def class_probabilities(model, images):
    """images (N, 3, H, W) array -> class probabilities (N, C, H, W) array, on the same backend.

    The DUpsampling model already returns log softmax(z / T) (Eq. 6); the others return
    logits, to which softmax is applied here.
    """
    scores = model(Tensor(images))
    if model.temperature is not None:
        return F.exp(scores).data
    return F.softmax(scores, dim=1).data


def predict(model, image, scales=(1.0,), flip=False):
    """image (3, H, W) normalised array -> probabilities (C, H, W), averaged over scales and flips.

    Each scaled copy is resized bilinearly (align_corners=False), run through the model, and
    its probabilities resized back to (H, W). Call under no_grad() with the model in eval mode.
    """
    height, width = image.shape[1:]
    batch = Tensor(image[None])                                         # (1, 3, H, W)
    total = None
    for scale in scales:
        size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        scaled = batch if size == (height, width) else F.interpolate(batch, size=size, mode="bilinear")
        views = [scaled.data]
        if flip:
            views.append(scaled.data[:, :, :, ::-1].copy())             # left-right mirror
        for k, view in enumerate(views):
            probs = class_probabilities(model, view)                    # (1, C, h, w)
            if k == 1:
                probs = probs[:, :, :, ::-1].copy()                     # mirror back
            if probs.shape[2:] != (height, width):
                probs = F.interpolate(Tensor(probs), size=(height, width), mode="bilinear").data
            total = probs if total is None else total + probs
    return total[0] / (len(scales) * (2 if flip else 1))


def evaluate(model, dataset, xp, scales=(1.0,), flip=False, max_images=None, progress=None,
             on_prediction=None, long_side=None, part=(0, 1)):
    """Score `model` on `dataset` image by image at the original resolution.

    long_side: first resize each image so that its longer side has this many pixels (the
    scales then multiply that), as TensorFlow DeepLab's models are run at 513; the prediction
    is still scored at the original resolution. Returns a ConfusionMatrix. `progress(done, total)` is called after each image;
    `on_prediction(index, image_uint8, mask, prediction)` lets the caller save pictures.
    part=(rank, processes): score only images rank, rank + processes, ... (data-parallel
    validation: the processes' confusion matrices then add up to the whole set's).
    """
    transform = EvalTransform()
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    confusion = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for i in range(part[0], total, part[1]):
                image, mask = dataset[i]                                 # (H, W, 3) uint8, (H, W)
                normalised, _ = transform(image, mask)                   # (3, H, W) float32
                base = 1.0 if long_side is None else long_side / max(mask.shape)
                probs = predict(model, xp.asarray(normalised), [base * s for s in scales], flip)
                prediction = to_numpy(probs.argmax(axis=0)).astype(np.uint8)   # (H, W)
                confusion.update(prediction, mask)
                if on_prediction is not None:
                    on_prediction(i, image, mask, prediction)
                if progress is not None:
                    progress(i + 1, total)
    finally:
        model.train(was_training)
    return confusion


# ---------------------------------------------------------------- pictures
def colorize(mask, palette):
    """(H, W) class ids -> palette ("P") PIL image; void (255) keeps the palette's colour 255."""
    picture = Image.fromarray(mask.astype(np.uint8), mode="P")
    picture.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())  # (256, 3) -> flat RGB list
    return picture


def legend(picture, labels, class_names, palette, row_height=14):
    """`picture` (PIL) with a strip below it: a colour swatch and the name of every class that
    occurs in `labels` (any number of label maps), in class order; void (255) is left out."""
    present = sorted(set(np.unique(np.concatenate([np.ravel(l) for l in labels]))) - {255})
    items = [(int(c), class_names[c] if c < len(class_names) else f"class {c}") for c in present]
    draw_width = picture.width
    rows, x = [[]], 0
    for c, name in items:
        width = 14 + 6 * len(name) + 10  # swatch, text (the default font is ~6 px a letter), gap
        if rows[-1] and x + width > draw_width:
            rows.append([])
            x = 0
        rows[-1].append((x, c, name))
        x += width
    sheet = Image.new("RGB", (picture.width, picture.height + row_height * len(rows) + 4), "white")
    sheet.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = picture.height + 2 + r * row_height
        for x, c, name in row:
            draw.rectangle([x + 2, top + 2, x + 11, top + 11], fill=tuple(int(v) for v in palette[c]),
                           outline="black")
            draw.text((x + 14, top + 1), name, fill="black")
    return sheet


def save_prediction(save_dir, name, image, mask, prediction, palette, class_names=None):
    """Write NAME.png (the prediction as a palette PNG, loadable as labels) and
    NAME_panel.png (image | ground truth | prediction, side by side, with a legend of the
    classes in the truth and the prediction when class_names are given)."""
    os.makedirs(save_dir, exist_ok=True)
    colorize(prediction, palette).save(os.path.join(save_dir, f"{name}.png"))
    height, width = mask.shape
    panel = Image.new("RGB", (3 * width, height))
    panel.paste(Image.fromarray(image), (0, 0))
    panel.paste(colorize(mask, palette).convert("RGB"), (width, 0))
    panel.paste(colorize(prediction, palette).convert("RGB"), (2 * width, 0))
    if class_names is not None:
        panel = legend(panel, [mask, prediction], class_names, palette)
    panel.save(os.path.join(save_dir, f"{name}_panel.png"))


def format_report(confusion, class_names):
    """A printable table: per-class IoU ('-' for classes absent from truth and prediction),
    then mIoU and pixel accuracy."""
    ious = confusion.per_class_iou()
    width = max(len(n) for n in class_names)
    lines = [f"{'class':<{width}}  IoU"]
    for name, iou in zip(class_names, ious):
        lines.append(f"{name:<{width}}  {'-' if np.isnan(iou) else f'{100 * iou:5.2f}'}")
    lines.append(f"{'mIoU':<{width}}  {100 * confusion.miou():5.2f}")
    lines.append(f"{'pixel acc.':<{width}}  {100 * confusion.pixel_accuracy():5.2f}")
    return "\n".join(lines)
