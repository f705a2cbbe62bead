"""Segmentation metrics (IoU per class, mIoU, pixel accuracy) and Table 1's upper bounds.

pred, target: (...) integer label maps of the same shape -> confusion: (C, C) int64, where

    confusion[t, p] = number of pixels of true class t predicted as class p,

counting only pixels whose target is not `ignore_index` (255, VOC's void). From it, per class

    IoU_c = TP_c / (TP_c + FP_c + FN_c) = confusion[c, c] / (row_c + column_c - confusion[c, c]).

mIoU is the mean of IoU_c over the PRESENT classes: those with a non-zero union, i.e. that
appear in the target or in the prediction of the scored pixels. This follows the paper ("pixel
intersection-over-union averaged across the present classes", Sec. 4) and the usual VOC
evaluation: a class absent from both neither helps nor hurts, while a class predicted but
never true scores IoU 0. Accumulate the
confusion matrix over the whole evaluation set first, then take the ratios (dataset-level IoU,
not an average of per-image IoUs).

Upper bounds (the paper's mIoU*, Sec. 4.1.1). How well can an upsampling restore a label map
from 1/r of its resolution at best? Feed it the ideal low-resolution input, computed from the
label map itself, and score the result against that label map:

* dupsampling_oracle: each r x r block compressed to x = W^T (v - mean), decoded by
  v~ = W x + mean (tinyseg.blocks), argmax per pixel;
* bilinear_oracle: each block's class fractions, bilinearly upsampled by r, argmax.

The paper measures mIoU* differently, by training a small CNN fed the labels, so its numbers
also include what that CNN fails to learn; docs/pca.md puts both side by side.
"""
import numpy as np

from .autograd import Tensor, no_grad
from .backend import to_numpy
from .functional.resize import interpolate
from .blocks import (IGNORE_INDEX, blocks_to_labels, compress, decompress, encode_blocks,
                     onehot_blocks)


def confusion_matrix(pred, target, num_classes, ignore_index=IGNORE_INDEX):
    """pred, target: integer arrays of equal shape -> (C, C) int64 counts, rows = true class.

    Pixels whose target is ignore_index are not counted. NumPy or CuPy input (copied to the
    host). Raises ValueError for mismatched shapes, non-integer input or out-of-range labels.
    """
    pred, target = to_numpy(pred), to_numpy(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {pred.shape} but target has shape {target.shape}; "
                         "expected equal shapes")
    for name, array in (("pred", pred), ("target", target)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    scored = target != ignore_index
    pred, target = pred[scored].astype(np.int64), target[scored].astype(np.int64)
    for name, array in (("target", target), ("pred", pred)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            bad = array[(array < 0) | (array >= num_classes)][0]
            raise ValueError(f"{name} has label {bad} at a scored pixel; expected 0.."
                             f"{num_classes - 1} (or {ignore_index} in target for void)")
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)  # (true class, predicted class)


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix over many predictions; reads off IoU and accuracy.

    >>> cm = ConfusionMatrix(21)
    >>> for pred, target in batches: cm.update(pred, target)
    >>> cm.miou(), cm.pixel_accuracy(), cm.per_class_iou()
    """

    def __init__(self, num_classes, ignore_index=IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self):
        self.matrix[:] = 0

    def update(self, pred, target):
        """Add the pixels of one prediction (any shape, e.g. (N, H, W)) and its target."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def per_class_iou(self):
        """(C,) float64: IoU of each class; nan for a class absent from targets and predictions."""
        true_positive = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - true_positive
        iou = np.full(self.num_classes, np.nan)
        present = union > 0
        iou[present] = true_positive[present] / union[present]
        return iou

    def miou(self):
        """Mean IoU over the present classes (non-zero union); nan before any pixel is counted."""
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan")

    def pixel_accuracy(self):
        """Fraction of scored pixels predicted correctly; nan before any pixel is counted."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


# ---------------------------------------------------------------- upper bounds (Table 1)
def dupsampling_oracle(mask, W, mean, ratio, void="nearest", ignore_index=IGNORE_INDEX):
    """(H, W) labels -> (H, W) labels: compress each block, reconstruct it, argmax per pixel.

    W: (r*r*C, C~), mean: (r*r*C,) from tinyseg.pca. What a network would score if it output
    exactly the compressed labels x = P (v - mean) (Eq. 4's target). The mask is encoded with
    the void rule W was fitted with (tinyseg.blocks); it is padded with void to multiples of r and
    the result cropped back.
    """
    num_classes = W.shape[0] // (ratio * ratio)
    blocks, grid, _ = encode_blocks(mask, ratio, num_classes, void, ignore_index)
    onehot = onehot_blocks(blocks, num_classes, ignore_index)        # (B, r*r*C)
    restored = decompress(compress(onehot, W, mean), W, mean)        # (B, r*r*C)
    restored = restored.reshape(len(onehot), ratio * ratio, num_classes)  # (B, r*r, C)
    return blocks_to_labels(restored.argmax(axis=2), grid, ratio, np.shape(mask))


def bilinear_oracle(mask, ratio, num_classes, void="nearest", ignore_index=IGNORE_INDEX):
    """(H, W) labels -> (H, W) labels: one-hot, average over r x r blocks, bilinear x r, argmax.

    What a network would score if it output the class fractions of each block and bilinear
    upsampling (align_corners=False, Eq. 1) restored the full resolution. Void pixels are
    encoded by the same rules as for DUpsampling (`void`, tinyseg.blocks) before averaging.
    """
    blocks, grid, _ = encode_blocks(mask, ratio, num_classes, void, ignore_index)
    onehot = onehot_blocks(blocks, num_classes, ignore_index)       # (B, r*r*C)
    fractions = onehot.reshape(grid[0], grid[1], ratio * ratio, num_classes)  # (gh, gw, r*r, C)
    fractions = fractions.mean(axis=2)                                        # (gh, gw, C)
    fractions = fractions.transpose(2, 0, 1)[None]                            # (1, C, gh, gw)
    with no_grad():
        scores = interpolate(Tensor(fractions), size=(grid[0] * ratio, grid[1] * ratio),
                             mode="bilinear", align_corners=False).data[0]  # (C, H_pad, W_pad)
    labels = scores.argmax(axis=0)
    return labels[:np.shape(mask)[0], :np.shape(mask)[1]]
