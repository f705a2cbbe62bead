"""A synthetic VOC: coloured, textured shapes of the 20 VOC classes, small enough to train on a CPU.

Every image shows 1-4 shapes (rectangles, ellipses, triangles; rotated, overlapping) on a
washed-out background. The class of a shape is written in its local appearance, so that a
small network can learn it from a few pixels around each one:

    hue       10 hues, 36 degrees apart: (class - 1) % 10
    tone      light for classes 1-10, dark for classes 11-20
    texture   diagonal stripes (light classes) or a checkerboard (dark classes)
    plus a small random hue shift, brightness, texture phase and pixel noise per shape, so
    that the network must learn the class rather than memorise the images.

Hue and tone alone decide the class: fine textures do not survive the 0.5x downscaling of
the training augmentation, so the texture only adds a second, redundant cue.

As in VOC, the pixels on the outline of every shape are void (255), 2 px wide. The files are
written in VOC's layout (JPEGImages/*.jpg, SegmentationClass/*.png as 8-bit palette PNGs,
ImageSets/Segmentation/{train,val,trainval}.txt), so the very same `VOCDataset` reads them.

Everything follows from the seed: sample i of a split draws from its own generator seeded by
(seed, split, i). Generation is written once to a folder and reused (`ensure_synthetic`); a
marker file written last tells a finished folder from an interrupted one.

    python -m tinyseg.data.synthetic --out data-cache/synthetic --num-train 300 --num-val 60
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

from .base import DataError, IGNORE_INDEX
from .voc import VOC_CLASSES, voc_palette

MARKER = "synthetic.json"
GENERATOR_VERSION = 2  # bumped whenever the images change, so that old caches are regenerated
SPLIT_CODES = {"train": 0, "val": 1}
TONES = (0.85, 0.45)
TEXTURES = ("stripes", "checker")
SHAPES = ("rectangle", "ellipse", "triangle")
VOID_RADIUS = 1  # a pixel is void when a label change lies within this (Chebyshev) distance


def class_appearance(label):
    """(hue in [0, 1), mean brightness in [0, 1], texture name) of object class 1..20."""
    tone = (label - 1) // 10  # 0: light, 1: dark
    return ((label - 1) % 10) / 10, TONES[tone], TEXTURES[tone]


def texture_pattern(kind, xx, yy, phase):
    """0/1 pattern over integer pixel grids xx, yy: stripes of period 6 px, or 4-px checks."""
    if kind == "stripes":
        return ((xx + yy + phase) // 3) % 2
    return ((xx + phase) // 4 + (yy + phase) // 4) % 2


def shape_region(kind, xx, yy, rng):
    """Boolean (H, W) region of one randomly placed, sized and rotated shape."""
    height, width = xx.shape
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    a, b = rng.uniform(0.12, 0.35, size=2) * min(width, height)  # half-extents in pixels
    angle = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)  # coordinates along the shape's axes
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    if kind == "rectangle":
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if kind == "ellipse":
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    corners = angle + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.4, 0.4, size=3)
    px, py = cx + a * np.cos(corners), cy + a * np.sin(corners)  # the triangle's 3 corners
    sides = [(px[(k + 1) % 3] - px[k]) * (yy - py[k]) - (py[(k + 1) % 3] - py[k]) * (xx - px[k])
             for k in range(3)]  # >= 0 on the inner side of each edge, corners in angle order
    return (sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)


def void_borders(labels, radius=VOID_RADIUS):
    """labels (H, W) -> mask (H, W) with 255 wherever a different label is within `radius`."""
    height, width = labels.shape
    padded = np.pad(labels, radius, mode="edge")
    near_change = np.zeros(labels.shape, dtype=bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[radius + dy:radius + dy + height, radius + dx:radius + dx + width]
            near_change |= shifted != labels
    mask = labels.copy()
    mask[near_change] = IGNORE_INDEX
    return mask


def hsv_to_rgb(hue, saturation, value):
    """HSV arrays in [0, 1] (H, W) -> RGB (H, W, 3) in [0, 1], the textbook hexcone formula.

    (Pillow's HSV -> RGB conversion drops the value channel, so tinyseg does it itself.)
    """
    sector = np.floor(hue * 6).astype(int) % 6      # which 60-degree sector of the colour wheel
    fraction = hue * 6 - np.floor(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    choices = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    channels = [np.choose(sector, [c[k] for c in choices]) for k in range(3)]
    return np.stack(channels, axis=-1)


def make_sample(rng, width, height):
    """One synthetic sample: image np.uint8 (H, W, 3) RGB and mask np.uint8 (H, W)."""
    yy, xx = np.mgrid[0:height, 0:width]  # (H, W) integer pixel coordinates
    # Background: low saturation, a brightness ramp in a random direction.
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(direction) + yy * np.sin(direction)) / max(width, height)
    hue = np.full((height, width), rng.uniform(0, 1))
    saturation = np.full((height, width), rng.uniform(0.0, 0.15))
    value = np.clip(rng.uniform(0.35, 0.75) + 0.25 * ramp, 0, 1)
    labels = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(1, 5)):
        label = int(rng.integers(1, len(VOC_CLASSES)))
        region = shape_region(SHAPES[rng.integers(len(SHAPES))], xx, yy, rng)
        class_hue, brightness, kind = class_appearance(label)
        pattern = texture_pattern(kind, xx, yy, int(rng.integers(0, 8)))
        hue[region] = (class_hue + rng.uniform(-0.02, 0.02)) % 1.0
        saturation[region] = rng.uniform(0.65, 0.9)
        value[region] = (brightness + 0.24 * (pattern[region] - 0.5)) * rng.uniform(0.9, 1.1)
        labels[region] = label
    rgb = hsv_to_rgb(hue, saturation, np.clip(value, 0, 1)) * 255  # (H, W, 3)
    noisy = rgb + rng.normal(0, 8, size=(height, width, 3))
    image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return image, void_borders(labels)


def write_palette_png(mask, path, palette):
    """Save mask (H, W) uint8 as an 8-bit palette PNG (pixel value = class id)."""
    im = Image.fromarray(mask)
    im.putpalette(palette.ravel().tolist())  # turns the grey ("L") image into a "P" one
    im.save(path)


def read_marker(root):
    """The parameters recorded by a finished generation in `root`, or None."""
    try:
        with open(os.path.join(root, MARKER)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record.get("params") if record.get("complete") else None


def write_marker(root, params, complete):
    with open(os.path.join(root, MARKER), "w") as f:
        json.dump({"complete": complete, "params": params}, f, indent=1)


def generate_synthetic(root, num_train=300, num_val=60, size=(160, 120), seed=0):
    """Write the synthetic VOC into root/VOCdevkit/VOC2012 (size = (width, height))."""
    width, height = size
    folder = os.path.join(root, "VOCdevkit", "VOC2012")
    image_dir = os.path.join(folder, "JPEGImages")
    mask_dir = os.path.join(folder, "SegmentationClass")
    list_dir = os.path.join(folder, "ImageSets", "Segmentation")
    for d in (image_dir, mask_dir, list_dir):
        os.makedirs(d, exist_ok=True)
    palette = voc_palette()
    split_ids = {}
    for split, count in (("train", num_train), ("val", num_val)):
        split_ids[split] = [f"{split}_{i:05d}" for i in range(count)]
        for i, sample_id in enumerate(split_ids[split]):
            rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
            image, mask = make_sample(rng, width, height)
            Image.fromarray(image).save(os.path.join(image_dir, f"{sample_id}.jpg"), quality=90)
            write_palette_png(mask, os.path.join(mask_dir, f"{sample_id}.png"), palette)
    split_ids["trainval"] = split_ids["train"] + split_ids["val"]
    for split, ids in split_ids.items():
        with open(os.path.join(list_dir, f"{split}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))


def ensure_synthetic(root, num_train=300, num_val=60, size=(160, 120), seed=0):
    """Generate the synthetic VOC in `root` unless a finished one with these parameters is there.

    Returns root. The marker says "complete" only once every file is written, so a folder
    left by an interrupted run is generated again. A root holding a VOCdevkit/ that has no
    marker at all (real data, say) is refused rather than overwritten.
    """
    params = {"version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
              "size": [int(size[0]), int(size[1])], "seed": int(seed)}
    if num_train < 1 or num_val < 1 or min(params["size"]) < 8:
        raise DataError(f"synthetic data needs num_train, num_val >= 1 and a size of at least "
                        f"8x8 pixels, got {params}")
    if read_marker(root) == params:
        return root
    if (os.path.isdir(os.path.join(root, "VOCdevkit"))
            and not os.path.isfile(os.path.join(root, MARKER))):
        raise DataError(f"{root} already holds a VOCdevkit/ that is not tinyseg's synthetic data; "
                        "choose another folder for it")
    os.makedirs(root, exist_ok=True)
    write_marker(root, params, complete=False)
    generate_synthetic(root, num_train, num_val, params["size"], seed)
    write_marker(root, params, complete=True)
    return root


def parse_size(text):
    """"128" -> (128, 128); "160x120" -> (160, 120), as (width, height)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected a size like 128 or 160x120, got {text!r}")
    width = int(parts[0])
    return width, int(parts[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tinyseg.data.synthetic",
        description="Write (once) a synthetic VOC 2012-style segmentation dataset.")
    parser.add_argument("--out", required=True, help="folder that will hold VOCdevkit/")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=60)
    parser.add_argument("--size", type=parse_size, default=(160, 120),
                        help="WIDTHxHEIGHT or one number for a square (default 160x120)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        ensure_synthetic(args.out, args.num_train, args.num_val, args.size, args.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    width, height = args.size
    print(f"synthetic VOC ({args.num_train} train, {args.num_val} val, {width}x{height}, "
          f"seed {args.seed}) in {os.path.join(args.out, 'VOCdevkit', 'VOC2012')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
