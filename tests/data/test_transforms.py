"""Augmentation keeps every label on its pixel, pads with void, crops inside, is seeded."""
import numpy as np
import pytest

from tinyseg.data import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform
from tinyseg.data.transforms import (normalize, pad_to, random_crop, random_hflip, random_scale,
                                     resize)

COLOURS = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [240, 240, 30]], dtype=np.uint8)


def blocks(height=48, width=64):
    """A mask of 4 large blocks (ids 0..3) and an image painting each id its own colour."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 2:, :] += 2
    mask[:, width // 2:] += 1
    return COLOURS[mask], mask


def coordinates(height=30, width=50):
    """An image whose red/green channels are each pixel's row/column; the mask its row."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    return image, rows.astype(np.uint8)


def interior(mask):
    """Pixels whose 3x3 neighbourhood carries one label and lies inside the crop."""
    padded = np.pad(mask.astype(np.int64), 1, constant_values=-1)
    same = np.ones(mask.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= padded[1 + dy:1 + dy + mask.shape[0], 1 + dx:1 + dx + mask.shape[1]] == mask
    return same


def test_flip_twice_is_identity_and_flips_both():
    image, mask = coordinates()
    rng = np.random.default_rng(0)
    flipped = [random_hflip(image, mask, rng, p=1.0) for _ in range(2)]
    np.testing.assert_array_equal(flipped[0][0], image[:, ::-1])
    np.testing.assert_array_equal(flipped[0][1], mask[:, ::-1])
    twice = random_hflip(*flipped[0], rng, p=1.0)
    np.testing.assert_array_equal(twice[0], image)
    np.testing.assert_array_equal(twice[1], mask)


def test_crop_stays_inside_and_cuts_image_and_mask_alike():
    image, mask = coordinates(30, 50)
    tops, lefts = set(), set()
    for seed in range(200):
        crop_image, crop_mask = random_crop(image, mask, np.random.default_rng(seed), 20, 16)
        top, left = int(crop_image[0, 0, 0]), int(crop_image[0, 0, 1])
        assert 0 <= top <= 10 and 0 <= left <= 34
        np.testing.assert_array_equal(crop_image, image[top:top + 20, left:left + 16])
        np.testing.assert_array_equal(crop_mask, mask[top:top + 20, left:left + 16])
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(11)) and {0, 34} <= lefts


def test_pad_fills_void_and_imagenet_mean():
    image, mask = blocks(10, 12)
    padded_image, padded_mask = pad_to(image, mask, 16, 14)
    assert padded_mask.shape == (16, 14) and padded_image.shape == (16, 14, 3)
    np.testing.assert_array_equal(padded_mask[:10, :12], mask)
    np.testing.assert_array_equal(padded_image[:10, :12], image)
    assert (padded_mask[10:] == 255).all() and (padded_mask[:, 12:] == 255).all()
    normalised = normalize(padded_image)
    assert np.abs(normalised[:, 10:, :]).max() < 1 / 255 / min(IMAGENET_STD)
    same_image, same_mask = pad_to(image, mask, 8, 8)
    assert same_image is image and same_mask is mask


def test_normalize_formula_and_layout():
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = normalize(image)
    assert x.dtype == np.float32 and x.shape == (3, 5, 7) and x.flags.c_contiguous
    for c in range(3):
        expected = (image[..., c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(x[c], expected, rtol=1e-5, atol=1e-6)


def test_scale_range_and_nearest_mask():
    image, mask = blocks(40, 60)
    heights = []
    for seed in range(100):
        scaled_image, scaled_mask = random_scale(image, mask, np.random.default_rng(seed))
        assert scaled_image.shape[:2] == scaled_mask.shape
        assert set(np.unique(scaled_mask).tolist()) == {0, 1, 2, 3}  # nearest: no new ids
        heights.append(scaled_mask.shape[0])
    assert 20 <= min(heights) < 26 and 74 < max(heights) <= 80


@pytest.mark.parametrize("seed", range(10))
def test_train_transform_keeps_labels_on_their_pixels(seed):
    image, mask = blocks()
    transform = TrainTransform(crop_size=(40, 56), mean=(0, 0, 0), std=(1, 1, 1))
    x, y = transform(image, mask, np.random.default_rng(seed))
    assert x.shape == (3, 40, 56) and x.dtype == np.float32
    assert y.shape == (40, 56) and y.dtype == np.int64
    pixels = np.round(x.transpose(1, 2, 0) * 255)  # (3, H, W) -> (H, W, 3), back to 0..255
    inside = interior(y) & (y != 255)
    assert inside.sum() > 100
    np.testing.assert_allclose(pixels[inside], COLOURS[y[inside]], atol=1)
    padding = y == 255
    np.testing.assert_array_equal(pixels[padding], 0)  # the mean (0 here) under void


def test_train_transform_is_seeded():
    image, mask = blocks()
    transform = TrainTransform(crop_size=32)
    first = transform(image, mask, np.random.default_rng(5))
    again = transform(image, mask, np.random.default_rng(5))
    other = transform(image, mask, np.random.default_rng(6))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_labels_only_transform():
    image, mask = blocks()
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    none_image, mask_only = TrainTransform(crop_size=32)(None, mask, rng_a)
    _, mask_with_image = TrainTransform(crop_size=32)(image, mask, rng_b)
    assert none_image is None
    np.testing.assert_array_equal(mask_only, mask_with_image)


def test_eval_transform():
    image, mask = blocks(30, 40)
    x, y = EvalTransform()(image, mask)
    assert x.shape == (3, 30, 40) and y.dtype == np.int64
    np.testing.assert_array_equal(y, mask)
    x, y = EvalTransform(size=(15, 20))(image, mask)
    assert x.shape == (3, 15, 20) and y.shape == (15, 20)
    np.testing.assert_array_equal(y, resize(None, mask, 15, 20)[1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="crop_size"):
        TrainTransform(crop_size=0)
    with pytest.raises(ValueError, match="scale_range"):
        TrainTransform(crop_size=8, scale_range=(2.0, 0.5))
