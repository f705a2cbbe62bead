"""What every segmentation dataset shares: file reading, validation, and one error class.

A dataset is a list of ids, and for each id an image file and a mask file:

    image: np.uint8 (H, W, 3), RGB
    mask:  np.uint8 (H, W), class ids in [0, num_classes) and 255 ("void": not scored, no loss)

Real data is messy (a truncated download, a colour-rendered mask, a label id the model has
no output for), and a bad file met at iteration 20,000 is expensive. So every file is checked
when it is read, and every problem becomes a `DataError` whose one-line message names the
file, what was found and what was expected. Command lines catch it and print `error: ...`.
"""
import os

import numpy as np
from PIL import Image

IGNORE_INDEX = 255


class DataError(ValueError):
    """A missing or malformed data file or folder; the message names the path."""


def require_dir(path, layout):
    """Raise DataError unless `path` is a folder; `layout` says where it was expected."""
    if os.path.isfile(path):
        raise DataError(f"{path} is a file, not a folder (expected layout: {layout})")
    if not os.path.isdir(path):
        raise DataError(f"folder not found: {path} (expected layout: {layout})")


def read_split_file(path, layout):
    """The ids listed in a split file, one per line (blank lines skipped)."""
    if not os.path.isfile(path):
        raise DataError(f"split file not found: {path} (expected layout: {layout})")
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is dropped
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise DataError(f"split file {path} lists no ids (expected one image id per line)")
    return ids


def exif_orientation(path):
    """The EXIF orientation tag of an image file (1 = upright; 5-8 = turned by 90 degrees), or 1."""
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1))
    except (OSError, ValueError):
        return 1


def read_image_file(path):
    """Decode an image file to np.uint8 (H, W, 3) RGB, or raise DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later in a worker
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None
    return np.asarray(rgb, dtype=np.uint8)


def read_label_file(path):
    """Decode a label PNG to np.uint8 (H, W) of raw values, or raise DataError naming the file.

    Labels must be stored as 8-bit palette ("P") or grey ("L") images, whose pixel values are
    the ids themselves; a colour-rendered ("RGB") mask would need a colour-to-id table instead.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"mask {path} has image mode {im.mode!r}; expected an 8-bit "
                                "palette ('P') or grey ('L') PNG whose pixel values are class ids")
            im.load()
            return np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"mask file not found: {path}") from None
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot decode mask {path}: {e}") from None


def image_size(path):
    """(width, height) from the file header only, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


class SegmentationDataset:
    """A split of a segmentation dataset: ids, their files, and validated loading.

    Subclasses find the files (each dataset has its own folder layout) and pass them here; a
    dataset whose files store something other than class ids (Cityscapes stores its 34 raw
    label ids) overrides `decode_mask`.

    labels_only=True reads masks only: no image folder is needed, and `load_image` refuses.
    """

    ignore_index = IGNORE_INDEX

    def __init__(self, name, class_names, split, ids, image_paths, mask_paths, palette,
                 labels_only=False):
        if not ids:
            raise DataError(f"{name} split {split!r} has no ids")
        self.name = name
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.split = split
        self.ids = list(ids)
        self.palette = palette  # (256, 3) uint8: the colour of each id in pictures
        self.labels_only = labels_only
        self._image_paths = None if labels_only else list(image_paths)
        self._mask_paths = list(mask_paths)
        self._check_files_exist(self._mask_paths, "mask")
        if not labels_only:
            self._check_files_exist(self._image_paths, "image")

    def _check_files_exist(self, paths, kind):
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DataError(f"{len(missing)} of the {len(paths)} {kind} files of {self.name} "
                            f"split {self.split!r} are missing, e.g. {missing[0]}")

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
                f"{len(self)} ids, num_classes={self.num_classes}, labels_only={self.labels_only})")

    def image_path(self, i):
        if self.labels_only:
            raise DataError(f"{self.name} was opened with labels_only=True: it has no images")
        return self._image_paths[i]

    def mask_path(self, i):
        return self._mask_paths[i]

    def decode_mask(self, raw, path):
        """Raw label-file values -> class ids (and 255); identity for datasets storing ids."""
        return raw

    def load_mask(self, i):
        """The mask of sample i: np.uint8 (H, W), ids in [0, num_classes) or 255; validated."""
        path = self.mask_path(i)
        mask = self.decode_mask(read_label_file(path), path)
        counts = np.bincount(mask.ravel(), minlength=256)
        present = np.flatnonzero(counts).tolist()  # the distinct values, ascending
        bad = [v for v in present if v >= self.num_classes and v != IGNORE_INDEX]
        if bad:
            raise DataError(f"mask {path} has values {bad}, outside the {self.num_classes} "
                            f"class ids 0..{self.num_classes - 1} of {self.name} and void 255")
        return mask

    def load_image(self, i):
        """The image of sample i: np.uint8 (H, W, 3) RGB, the same size as its mask."""
        path = self.image_path(i)
        image = read_image_file(path)
        mask_w, mask_h = image_size(self.mask_path(i))
        if image.shape[:2] != (mask_h, mask_w):
            hint = ""
            if exif_orientation(path) in (5, 6, 7, 8) and image.shape[:2] == (mask_w, mask_h):
                hint = ("; the photo's EXIF orientation turns it by 90 degrees for viewers, and "
                        "the mask was drawn on the turned photo: save the photo upright (e.g. "
                        "PIL.ImageOps.exif_transpose) or the mask in the stored orientation")
            raise DataError(f"image {path} is {image.shape[1]}x{image.shape[0]} but its mask "
                            f"{self.mask_path(i)} is {mask_w}x{mask_h} (width x height){hint}")
        return image

    def __getitem__(self, i):
        """(image, mask) of sample i; image is None for a labels_only dataset."""
        image = None if self.labels_only else self.load_image(i)
        return image, self.load_mask(i)
