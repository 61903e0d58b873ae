"""Parsing metric on hand-made label maps whose confusion matrix is computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from saip_bench.cli import main
from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics.parsing import confusion_matrix, evaluate_dirs, scores_from_confusion

# Image A (2x3) and image B (1x2); 4 classes, class 3 appears in neither GT nor prediction.
GT_A = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
PRED_A = np.array([[0, 1, 1], [1, 2, 2]], dtype=np.uint8)  # the 255 pixel's prediction is dropped
GT_B = np.array([[2, 2]], dtype=np.uint8)
PRED_B = np.array([[0, 2]], dtype=np.uint8)

# rows GT, columns prediction, accumulated over A and B by hand
HAND_CONFUSION = np.array([
    [1, 1, 0, 0],  # GT 0: one -> 0, one -> 1
    [0, 2, 0, 0],  # GT 1: both -> 1
    [1, 0, 2, 0],  # GT 2: A's one -> 2, B's -> 0 and 2
    [0, 0, 0, 0],
])


def test_confusion_matrix_by_hand():
    total = confusion_matrix(GT_A, PRED_A, 4) + confusion_matrix(GT_B, PRED_B, 4)
    np.testing.assert_array_equal(total, HAND_CONFUSION)


def test_scores_by_hand_absent_class_counts_as_zero():
    scores = scores_from_confusion(HAND_CONFUSION, ["bg", "a", "b", "absent"])
    # IoU: 0 -> 1/(2+2-1), 1 -> 2/(2+3-2), 2 -> 2/(3+2-2), 3 -> 0/max(1, 0)
    iou = [1 / 3, 2 / 3, 2 / 3, 0.0]
    assert scores["mIoU"] == pytest.approx(sum(iou) / 4)
    assert scores["IoU/absent"] == 0.0
    assert scores["IoU/bg"] == pytest.approx(1 / 3)
    assert scores["pixel_acc"] == pytest.approx(5 / 7)
    assert scores["mean_acc"] == pytest.approx((1 / 2 + 1 + 2 / 3 + 0) / 4)


def test_one_matrix_over_split_differs_from_mean_of_images():
    split = scores_from_confusion(HAND_CONFUSION)["pixel_acc"]
    per_image = np.mean([
        scores_from_confusion(confusion_matrix(GT_A, PRED_A, 4))["pixel_acc"],
        scores_from_confusion(confusion_matrix(GT_B, PRED_B, 4))["pixel_acc"],
    ])
    assert split == pytest.approx(5 / 7) and per_image == pytest.approx((4 / 5 + 1 / 2) / 2)


def test_out_of_range_values_are_errors_not_dropped():
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(GT_B, np.array([[0, 7]]), 4)
    with pytest.raises(ValueError, match="GT"):
        confusion_matrix(np.array([[9, 0]]), PRED_B, 4)


def _write(folder, name, array, mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(folder / name)


@pytest.fixture
def label_dirs(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write(gt, "a.png", GT_A)
    _write(gt, "b.png", GT_B)
    _write(pred, "a.png", PRED_A)
    _write(pred, "b.png", PRED_B)
    _write(pred, "extra.png", PRED_B)  # predictions without GT are not scored
    return gt, pred


def test_dirs_matched_by_name(label_dirs):
    scores = evaluate_dirs(*label_dirs, num_classes=4)
    assert scores["num_images"] == 2
    assert scores["mIoU"] == pytest.approx(scores_from_confusion(HAND_CONFUSION)["mIoU"])


def test_missing_prediction_and_wrong_size_and_rgb_are_named(label_dirs):
    gt, pred = label_dirs
    (pred / "b.png").unlink()
    with pytest.raises(UserError, match="b.png"):
        evaluate_dirs(gt, pred, 4)
    _write(pred, "b.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataFormatError, match="b.png"):
        evaluate_dirs(gt, pred, 4)
    _write(pred, "b.png", np.zeros((1, 2, 3), np.uint8), mode="RGB")
    with pytest.raises(DataFormatError, match="mode RGB"):
        evaluate_dirs(gt, pred, 4)


def test_cli_json(label_dirs, capsys):
    gt, pred = label_dirs
    assert main(["metric", "parsing", "--gt-dir", str(gt), "--pred-dir", str(pred),
                 "--num-classes", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 4)
    assert {"pixel_acc", "mean_acc", "IoU/3"} <= set(result)


def test_cli_table_and_error_exit(label_dirs, capsys):
    gt, pred = label_dirs
    assert main(["metric", "parsing", "--gt-dir", str(gt), "--pred-dir", str(pred),
                 "--num-classes", "4"]) == 0
    assert "mIoU" in capsys.readouterr().out
    assert main(["metric", "parsing", "--gt-dir", str(gt / "nope"), "--pred-dir", str(pred),
                 "--num-classes", "4"]) == 2
