"""Data augmentation: random scale, pad, random crop, flip, normalise.

The paper (Sec. 4, implementation details) scales the training images randomly from 0.5 to 2.0
and flips them left-right, following DeepLab, whose pad-and-crop to a fixed size we also take:

    image np.uint8 (H, W, 3), mask np.uint8 (H, W)
      -> image np.float32 (3, crop_h, crop_w), mask np.int64 (crop_h, crop_w)

Every geometric step is applied to the image and the mask together, so that each label stays on
its pixel: bilinear resampling for the image, nearest-neighbour for the mask (a blend of class
ids is not a class id). Padding fills the mask with void (255, no loss there) and the image with
the ImageNet mean, which normalisation then turns into 0.

Randomness comes only from the numpy Generator passed in, so a sample's augmentation is fixed
by the seed that made that generator (see loader.py). The image may be None (a labels_only
dataset, e.g. a network fed the one-hot ground truth): then only the mask is transformed.
"""
import numpy as np
from PIL import Image

from ..functional.conv import as_pair
from .base import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize(image, mask, height, width):
    """Resize to (height, width): bilinear for the image, nearest for the mask."""
    if image is not None:
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
    return image, mask


def random_scale(image, mask, rng, scale_range=(0.5, 2.0)):
    """Resize by a factor drawn uniformly from scale_range (the paper: 0.5 to 2.0)."""
    scale = rng.uniform(*scale_range)
    height, width = mask.shape
    return resize(image, mask, max(1, round(height * scale)), max(1, round(width * scale)))


def pad_to(image, mask, height, width, fill=IMAGENET_MEAN):
    """Pad at the bottom and right up to at least (height, width).

    The mask is padded with void (255); the image with `fill` (RGB in [0, 1], scaled to 0..255).
    """
    pad_h, pad_w = max(height - mask.shape[0], 0), max(width - mask.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return image, mask
    mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
    if image is not None:
        padded = np.empty(mask.shape + (3,), dtype=np.uint8)  # (H + pad_h, W + pad_w, 3)
        padded[...] = np.round(np.array(fill) * 255).astype(np.uint8)
        padded[:image.shape[0], :image.shape[1]] = image
        image = padded
    return image, mask


def random_crop(image, mask, rng, height, width):
    """A (height, width) window at a uniformly random position (the input must be large enough)."""
    top = int(rng.integers(0, mask.shape[0] - height + 1))
    left = int(rng.integers(0, mask.shape[1] - width + 1))
    mask = mask[top:top + height, left:left + width]
    if image is not None:
        image = image[top:top + height, left:left + width]
    return image, mask


def random_hflip(image, mask, rng, p=0.5):
    """Mirror left-right with probability p."""
    if rng.random() >= p:
        return image, mask
    return (None if image is None else image[:, ::-1]), mask[:, ::-1]


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (H, W, 3) -> float32 (3, H, W): x = (pixel / 255 - mean) / std per channel."""
    x = image.astype(np.float32) / 255.0
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


def _finish(image, mask, mean, std):
    """Normalise the image (if any) and make the mask int64, both contiguous."""
    if image is not None:
        image = normalize(image, mean, std)
    return image, np.ascontiguousarray(mask, dtype=np.int64)


class TrainTransform:
    """The paper's training augmentation: scale in [0.5, 2], pad, crop, flip, normalise.

    crop_size: int or (height, width). Call as `transform(image, mask, rng)`.
    """

    def __init__(self, crop_size, scale_range=(0.5, 2.0), flip=True,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.crop_h, self.crop_w = as_pair(crop_size, "crop_size")
        if self.crop_h < 1 or self.crop_w < 1:
            raise ValueError(f"TrainTransform: crop_size must be positive, got {crop_size}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"TrainTransform: scale_range must be (low, high) with "
                             f"0 < low <= high, got {scale_range}")
        self.scale_range, self.flip = tuple(scale_range), flip
        self.mean, self.std = mean, std

    def __call__(self, image, mask, rng):
        image, mask = random_scale(image, mask, rng, self.scale_range)
        image, mask = pad_to(image, mask, self.crop_h, self.crop_w, self.mean)
        image, mask = random_crop(image, mask, rng, self.crop_h, self.crop_w)
        if self.flip:
            image, mask = random_hflip(image, mask, rng)
        return _finish(image, mask, self.mean, self.std)

    def __repr__(self):
        return (f"TrainTransform(crop_size=({self.crop_h}, {self.crop_w}), "
                f"scale_range={self.scale_range}, flip={self.flip})")


class EvalTransform:
    """Evaluation: normalise only, or first resize to `size` = int or (height, width).

    Resizing changes the mask too (nearest); to score at the original resolution, leave
    size=None and evaluate one image at a time. `rng` is accepted and unused.
    """

    def __init__(self, size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.size = None if size is None else as_pair(size, "size")
        self.mean, self.std = mean, std

    def __call__(self, image, mask, rng=None):
        if self.size is not None:
            image, mask = resize(image, mask, *self.size)
        return _finish(image, mask, self.mean, self.std)

    def __repr__(self):
        return f"EvalTransform(size={self.size})"
