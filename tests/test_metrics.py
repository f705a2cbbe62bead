"""tinyseg.metrics: confusion matrix, IoU over present classes, pixel accuracy, input checks."""
import numpy as np
import pytest

from tinyseg.metrics import ConfusionMatrix, confusion_matrix

# 3 classes; void (255) pixels are not scored, whatever is predicted there
TARGET = np.array([[0, 0, 1, 1],
                   [0, 255, 1, 1],
                   [2, 2, 255, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 1, 0],
                 [2, 0, 7, 0]], dtype=np.int64)  # the 7 sits on a void pixel


def naive_confusion(pred, target, num_classes, ignore_index=255):
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.ravel(), target.ravel()):
        if t != ignore_index:
            matrix[t, p] += 1
    return matrix


def test_confusion_matrix_by_hand(xp):
    matrix = confusion_matrix(xp.asarray(PRED), xp.asarray(TARGET), 3)
    #                        predicted 0  1  2
    expected = np.array([[3, 1, 0],   # true 0: (0,0) (0,1)->1 (1,0) (2,3)
                         [1, 3, 0],   # true 1: (1,3)->0
                         [1, 0, 1]])  # true 2: (2,1)->0
    np.testing.assert_array_equal(matrix, expected)


def test_iou_accuracy_by_hand():
    cm = ConfusionMatrix(4)  # class 3 appears nowhere: its IoU is nan and it is not averaged
    cm.update(PRED, TARGET)
    # IoU_c = TP / (row + column - TP): 3/(4+5-3), 3/(4+4-3), 1/(2+1-1)
    expected = np.array([3 / 6, 3 / 5, 1 / 2, np.nan])
    np.testing.assert_allclose(cm.per_class_iou(), expected)
    assert cm.miou() == pytest.approx((3 / 6 + 3 / 5 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(7 / 10)


def test_class_predicted_but_never_true_counts_as_zero():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 2]), np.array([0, 0, 0]))
    np.testing.assert_allclose(cm.per_class_iou(), [2 / 3, np.nan, 0.0])
    assert cm.miou() == pytest.approx((2 / 3 + 0.0) / 2)


def test_matches_loops_and_accumulates(rng):
    cm = ConfusionMatrix(5)
    preds, targets = [], []
    for _ in range(3):
        target = rng.integers(0, 5, size=(2, 7, 9)).astype(np.uint8)
        target[rng.random(target.shape) < 0.2] = 255
        pred = rng.integers(0, 5, size=(2, 7, 9))
        cm.update(pred, target)
        preds.append(pred)
        targets.append(target)
    expected = naive_confusion(np.concatenate(preds), np.concatenate(targets), 5)
    np.testing.assert_array_equal(cm.matrix, expected)
    cm.reset()
    assert cm.matrix.sum() == 0 and np.isnan(cm.miou()) and np.isnan(cm.pixel_accuracy())


def test_input_checks():
    with pytest.raises(ValueError, match=r"pred has shape \(2, 3\) but target has shape \(3, 2\)"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 3)
    with pytest.raises(ValueError, match="integer class ids, got dtype float"):
        confusion_matrix(np.zeros(4), np.zeros(4, int), 3)
    with pytest.raises(ValueError, match="target has label 21 at a scored pixel; expected 0..20"):
        confusion_matrix(np.zeros(3, int), np.array([0, 21, 255]), 21)
    with pytest.raises(ValueError, match="pred has label -1"):
        confusion_matrix(np.array([0, -1]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        ConfusionMatrix(0)
