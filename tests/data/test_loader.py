"""DataLoader: batches fixed by (seed, k), resumable, threaded, and loud about bad files."""
import threading

import numpy as np
import pytest

from tinyseg.data import DataError, DataLoader, TrainTransform, build_dataset


class CountingDataset:
    """n samples of 6x8 pixels; every pixel of sample i holds the value i (image and mask)."""

    name, split = "counting", "train"

    def __init__(self, n=10, fail_at=None, error=None):
        self.n, self.fail_at, self.error = n, fail_at, error

    def __len__(self):
        return self.n

    def mask_path(self, i):
        return f"/data/sample_{i}.png"

    def __getitem__(self, i):
        if i == self.fail_at:
            raise self.error
        return np.full((6, 8, 3), i, dtype=np.uint8), np.full((6, 8), i, dtype=np.uint8)


def identity(image, mask, rng):
    """Keeps the values (image as float (3, H, W)) and records nothing random."""
    return image.transpose(2, 0, 1).astype(np.float32), mask.astype(np.int64)


def noisy(image, mask, rng):
    """Adds the sample's random draw, to see which generator each sample got."""
    x, y = identity(image, mask, rng)
    return x + rng.random(), y


def served(loader, start, stop):
    return [(x.copy(), y.copy()) for x, y in loader.iterate(start, stop)]


def sample_ids(batches):
    return [y[:, 0, 0].tolist() for _, y in batches]


def test_batches_shapes_and_epoch_permutations():
    loader = DataLoader(CountingDataset(10), batch_size=3, transform=identity, seed=1,
                        num_workers=2, drop_last=False)
    assert len(loader) == 4
    first = list(loader)
    second = list(loader)
    assert loader.epoch == 2
    x, y = first[0]
    assert x.shape == (3, 3, 6, 8) and x.dtype == np.float32
    assert y.shape == (3, 6, 8) and y.dtype == np.int64
    assert [len(b) for b in sample_ids(first)] == [3, 3, 3, 1]
    order_1, order_2 = sum(sample_ids(first), []), sum(sample_ids(second), [])
    assert sorted(order_1) == sorted(order_2) == list(range(10))
    assert order_1 != order_2  # a new order every epoch
    np.testing.assert_array_equal(first[1][0][:, 0], first[1][1])  # image and mask together


def test_drop_last_and_unshuffled_order():
    loader = DataLoader(CountingDataset(10), batch_size=3, shuffle=False, transform=identity,
                        num_workers=0, drop_last=True)
    assert len(loader) == 3
    assert sample_ids(list(loader)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(DataError, match="fewer than one batch"):
        DataLoader(CountingDataset(2), batch_size=3)


def test_same_seed_same_batches_whatever_the_threads():
    dataset = CountingDataset(10)
    runs = [served(DataLoader(dataset, 4, transform=noisy, seed=7, num_workers=w), 0, 7)
            for w in (0, 1, 3)]
    other = served(DataLoader(dataset, 4, transform=noisy, seed=8, num_workers=2), 0, 7)
    for run in runs[1:]:
        for (x0, y0), (x1, y1) in zip(runs[0], run):
            np.testing.assert_array_equal(x0, x1)
            np.testing.assert_array_equal(y0, y1)
    assert sample_ids(other) != sample_ids(runs[0])


def test_resume_mid_epoch_reproduces_the_run():
    loader = DataLoader(CountingDataset(10), 4, transform=noisy, seed=3, num_workers=2)
    uninterrupted = served(loader, 0, 9)  # 2 batches per epoch: crosses 4 epoch boundaries
    resumed = served(DataLoader(CountingDataset(10), 4, transform=noisy, seed=3), 5, 9)
    for (x0, y0), (x1, y1) in zip(uninterrupted[5:], resumed):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
    single = loader.load_batch(6)
    np.testing.assert_array_equal(single[0], uninterrupted[6][0])


def test_endless_iteration_and_early_stop_leave_no_thread():
    loader = DataLoader(CountingDataset(10), 2, transform=identity, num_workers=3)
    before = threading.active_count()
    stream = loader.iterate()
    for k, _ in zip(range(12), stream):
        pass
    stream.close()
    assert k == 11 and threading.active_count() == before


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_data_error_reaches_the_main_thread(workers):
    error = DataError("cannot decode image /data/sample_4.jpg: truncated")
    loader = DataLoader(CountingDataset(10, fail_at=4, error=error), 2, shuffle=False,
                        transform=identity, num_workers=workers)
    with pytest.raises(DataError, match="sample_4.jpg"):
        list(loader)


def test_other_worker_errors_name_the_file():
    loader = DataLoader(CountingDataset(10, fail_at=1, error=KeyError("boom")), 2,
                        transform=identity, num_workers=2)
    with pytest.raises(RuntimeError, match=r"/data/sample_1\.png.*KeyError") as info:
        list(loader)
    assert isinstance(info.value.__cause__, KeyError)


def test_mixed_sizes_need_a_fixed_size_transform(voc_sample_root):
    dataset = build_dataset("voc", voc_sample_root, "val")
    with pytest.raises(ValueError, match="fixed output size"):
        list(DataLoader(dataset, 4, shuffle=False, num_workers=0).iterate(0, 1))


def test_real_voc_sample_with_augmentation(voc_sample_root):
    dataset = build_dataset("voc", voc_sample_root, "train")
    loader = DataLoader(dataset, 4, transform=TrainTransform(crop_size=(48, 64)), seed=0)
    batches = served(loader, 0, 3)
    for images, masks in batches:
        assert images.shape == (4, 3, 48, 64) and masks.shape == (4, 48, 64)
        assert set(np.unique(masks).tolist()) <= set(range(21)) | {255}
        assert np.isfinite(images).all() and np.abs(images).max() < 3
    again = served(DataLoader(dataset, 4, transform=TrainTransform(crop_size=(48, 64))), 0, 3)
    np.testing.assert_array_equal(batches[2][0], again[2][0])


def test_corrupt_jpeg_in_a_worker_names_the_file(tiny_voc):
    dataset = build_dataset("voc", tiny_voc, "train")
    with open(dataset.image_path(2), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 truncated")
    loader = DataLoader(dataset, 1, shuffle=False, num_workers=2)
    with pytest.raises(DataError, match=r"c\.jpg"):
        list(loader)


def test_labels_only_batches(voc_masks_root):
    dataset = build_dataset("voc", voc_masks_root, "val", labels_only=True)
    loader = DataLoader(dataset, 2, transform=TrainTransform(crop_size=32), num_workers=0)
    images, masks = loader.load_batch(0)
    assert images is None and masks.shape == (2, 32, 32) and masks.dtype == np.int64
