"""VOC loading on the real sample and label folders, and every error a user can run into."""
import os

import numpy as np
import pytest
from PIL import Image

from tinyseg.data import DataError, VOC_CLASSES, build_dataset, voc_palette


def test_voc_sample_pairs_load_and_match(voc_sample_root):
    train = build_dataset("voc", voc_sample_root, "train")
    val = build_dataset("voc", voc_sample_root, "val")
    assert (len(train), len(val)) == (32, 16)
    assert train.num_classes == 21 and train.class_names == list(VOC_CLASSES)
    assert train.ignore_index == 255 and train.ids[0] == "2007_000032"
    seen = set()
    for ds in (train, val):
        for i in range(len(ds)):
            image, mask = ds.load_image(i), ds.load_mask(i)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
            values = set(np.unique(mask).tolist())
            assert values <= set(range(21)) | {255}
            seen |= values
            assert os.path.basename(ds.image_path(i)) == f"{ds.ids[i]}.jpg"
    assert seen == set(range(21)) | {255}  # the README: every class appears in the sample
    image, mask = train[0]
    assert image.shape == (281, 500, 3) and mask.shape == (281, 500)


def test_mask_is_read_as_class_ids_not_colours(voc_sample_root):
    ds = build_dataset("voc", voc_sample_root, "train")
    with Image.open(ds.mask_path(0)) as im:
        assert im.mode == "P"
        expected = np.array(im)
        assert im.getpalette()[:3 * 21] == voc_palette()[:21].ravel().tolist()
    np.testing.assert_array_equal(ds.load_mask(0), expected)


@pytest.mark.parametrize("suffix", ["", "VOCdevkit", os.path.join("VOCdevkit", "VOC2012")])
def test_root_may_name_any_level(voc_sample_root, suffix):
    ds = build_dataset("voc", os.path.join(voc_sample_root, suffix), "val")
    reference = build_dataset("voc", voc_sample_root, "val")
    assert ds.ids == reference.ids
    assert os.path.samefile(ds.mask_path(3), reference.mask_path(3))


def test_labels_only_reads_voc_masks_without_images(voc_masks_root):
    train = build_dataset("voc", voc_masks_root, "train", labels_only=True)
    aug = build_dataset("voc_aug", voc_masks_root, "train", labels_only=True)
    val = build_dataset("voc_aug", voc_masks_root, "val", labels_only=True)
    assert (len(train), len(aug), len(val)) == (1464, 10582, 725)
    assert "SegmentationClassAug" in aug.mask_path(0) and "SegmentationClassAug" in val.mask_path(0)
    mask = train.load_mask(0)
    assert mask.dtype == np.uint8 and 255 in mask  # official masks have void borders
    assert set(np.unique(aug.load_mask(len(aug) - 1)).tolist()) <= set(range(21)) | {255}
    image, same_mask = train[0]
    assert image is None
    np.testing.assert_array_equal(same_mask, mask)
    with pytest.raises(DataError, match="labels_only"):
        train.load_image(0)


def test_images_required_unless_labels_only(voc_masks_root):
    with pytest.raises(DataError, match="JPEGImages"):
        build_dataset("voc", voc_masks_root, "train")


def test_missing_root_is_one_clear_line(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError) as info:
        build_dataset("voc", missing, "train")
    message = str(info.value)
    assert missing in message and "\n" not in message
    assert "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt" in message
    assert isinstance(info.value, ValueError)


def test_root_without_voc_layout(tmp_path):
    with pytest.raises(DataError, match="no VOCdevkit/VOC2012 folder"):
        build_dataset("voc", str(tmp_path), "train")


def test_missing_split_file_names_it(tiny_voc):
    with pytest.raises(DataError) as info:
        build_dataset("voc", tiny_voc, "trainval")
    assert os.path.join("ImageSets", "Segmentation", "trainval.txt") in str(info.value)
    with pytest.raises(DataError, match="train_aug.txt"):
        build_dataset("voc_aug", tiny_voc, "train")


def test_empty_split_is_refused(tiny_voc):
    split = os.path.join(tiny_voc, "VOCdevkit", "VOC2012", "ImageSets", "Segmentation", "val.txt")
    with open(split, "w") as f:
        f.write("\n\n")
    with pytest.raises(DataError, match="lists no ids"):
        build_dataset("voc", tiny_voc, "val")


def test_missing_listed_file_is_reported_at_construction(tiny_voc):
    os.remove(os.path.join(tiny_voc, "VOCdevkit", "VOC2012", "SegmentationClass", "b.png"))
    with pytest.raises(DataError, match=r"1 of the 3 mask files .*missing.*b\.png"):
        build_dataset("voc", tiny_voc, "train")


def test_truncated_jpeg_is_a_data_error_naming_the_file(tiny_voc):
    ds = build_dataset("voc", tiny_voc, "train")
    path = ds.image_path(1)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    ds.load_image(0)
    with pytest.raises(DataError, match=r"cannot decode image .*b\.jpg"):
        ds.load_image(1)


def test_garbage_image_file(tiny_voc):
    ds = build_dataset("voc", tiny_voc, "train")
    with open(ds.image_path(2), "wb") as f:
        f.write(b"not an image at all")
    with pytest.raises(DataError, match=r"c\.jpg"):
        ds.load_image(2)


def test_mask_values_outside_the_classes_are_named(tiny_voc):
    ds = build_dataset("voc", tiny_voc, "train")
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[0, 0], mask[5, 5], mask[6, 6] = 21, 99, 255
    Image.fromarray(mask).save(ds.mask_path(0))
    with pytest.raises(DataError) as info:
        ds.load_mask(0)
    message = str(info.value)
    assert ds.mask_path(0) in message and "[21, 99]" in message and "255" in message


def test_rgb_mask_is_refused(tiny_voc):
    ds = build_dataset("voc", tiny_voc, "train")
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(ds.mask_path(0))
    with pytest.raises(DataError, match="'RGB'"):
        ds.load_mask(0)


def test_image_mask_size_mismatch_names_both_files(tiny_voc):
    ds = build_dataset("voc", tiny_voc, "train")
    Image.fromarray(np.zeros((32, 40), dtype=np.uint8)).save(ds.mask_path(1))
    with pytest.raises(DataError) as info:
        ds.load_image(1)
    message = str(info.value)
    assert ds.image_path(1) in message and ds.mask_path(1) in message
    assert "40x30" in message and "40x32" in message


def test_unknown_dataset_name(tiny_voc):
    with pytest.raises(DataError, match="unknown dataset 'coco'"):
        build_dataset("coco", tiny_voc, "train")
