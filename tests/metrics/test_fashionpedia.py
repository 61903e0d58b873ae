"""Fashionpedia AP^(IoU+F1): hand-made fixtures per rule; the real sample scored as the official API does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from saip_bench.errors import DataFormatError
from saip_bench.metrics import fashionpedia as fp

ATTRIBUTE_IDS = [0, 1, 2, 5, 281]  # non-contiguous, as in the real file


def tiny_gt() -> dict:
    return {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "categories": [{"id": i, "name": f"c{i}", "supercategory": "x"} for i in range(46)],
        "attributes": [{"id": a, "name": f"a{a}", "supercategory": "y"} for a in ATTRIBUTE_IDS],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "attribute_ids": [1, 281], "bbox": [10, 10, 20, 20],
             "area": 400, "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
            {"id": 2, "image_id": 1, "category_id": 13, "attribute_ids": [], "bbox": [50, 50, 20, 20],
             "area": 400, "iscrowd": 0, "segmentation": [[50, 50, 70, 50, 70, 70, 50, 70]]},
        ],
    }


def dets(attributes_cat0: list[int]) -> list[dict]:
    return [
        {"image_id": 1, "category_id": 0, "attribute_ids": attributes_cat0, "bbox": [10, 10, 20, 20],
         "score": 0.9},
        {"image_id": 1, "category_id": 13, "attribute_ids": [], "bbox": [50, 50, 20, 20], "score": 0.8},
    ]


def score(attributes_cat0: list[int]) -> dict[str, float]:
    return fp.evaluate(tiny_gt(), dets(attributes_cat0), iou_types=("bbox",))


def test_binary_macro_f1_equals_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(40):
        true = (rng.uniform(size=294) < rng.uniform(0, 0.05)).astype(int)
        pred = (rng.uniform(size=294) < rng.uniform(0, 0.05)).astype(int)
        expected = f1_score(true, pred, average="macro")
        assert fp.binary_macro_f1(true, pred) == pytest.approx(expected, abs=1e-12)
    zeros = np.zeros(294, dtype=int)
    assert fp.binary_macro_f1(zeros, zeros) == 1.0 == f1_score(zeros, zeros, average="macro")


def test_exact_attributes_match_everywhere():
    scores = score([1, 281])
    assert scores["bbox/AP"] == pytest.approx(1.0)
    assert scores["bbox/iou/AP"] == pytest.approx(1.0)


def test_attribute_f1_gates_the_match():
    # pred [] vs GT [1, 281] over 5 attributes: F1 = (0 + 0.75) / 2 = 0.375 < 0.5 -> never a TP with F1
    scores = score([])
    # category 0: 10 IoU x 10 F1 entries of precision 0; category 13 (no attributes): 10 IoU entries of 1
    assert scores["bbox/AP"] == pytest.approx(10 / 110)
    assert scores["bbox/AP_F150"] == pytest.approx(0.5)  # cat 0 at F1 .5 -> 0, cat 13 -> 1
    assert scores["bbox/iou/AP"] == pytest.approx(1.0)  # F1 ignored (-1 slot)
    assert scores["bbox/f1/AP"] == pytest.approx(10 / 110)  # IoU ignored, F1 still gates


def test_partial_attributes_pass_low_f1_thresholds_only():
    # pred [1] vs GT [1, 281]: F1 = (2/3 + 6/7) / 2 = 0.7619 -> passes t_F1 .50-.75 (6 of 10)
    f1 = (2 / 3 + 6 / 7) / 2
    assert fp.binary_macro_f1(np.array([0, 1, 0, 0, 1]), np.array([0, 1, 0, 0, 0])) == pytest.approx(f1)
    scores = score([1])
    assert scores["bbox/AP"] == pytest.approx((6 * 10 + 10) / 110)
    assert scores["bbox/AP_F175"] == pytest.approx(1.0)
    assert scores["bbox/AP_IOU50_F150"] == pytest.approx(1.0)


def test_category_without_attributes_ignores_attribute_predictions():
    gt = tiny_gt()
    results = dets([1, 281])
    results[1]["attribute_ids"] = [0, 2, 5]  # category 13 carries no attributes: F1 must not matter
    scores = fp.evaluate(gt, results, iou_types=("bbox",))
    assert scores["bbox/AP"] == pytest.approx(1.0)


def test_super_class_aps():
    scores = score([])
    assert scores["bbox/APo"] == pytest.approx(0.0)  # category 0 is outerwear (index 0-12)
    assert scores["bbox/iou/APa"] == pytest.approx(1.0)  # category 13 is an accessory
    assert "bbox/APa" not in scores  # accessories carry no attributes: no IoU+F1 APa (as official)
    assert scores["bbox/APp"] == -1.0  # no part GT: -1 as the official code reports


def test_unknown_attribute_id_is_a_clear_error():
    with pytest.raises(DataFormatError, match="attribute id 7"):
        score([7])


def test_real_sample_matches_official_fashionpedia_api(realdata):
    """Numbers produced by fashionpedia-api 1.1 (FPEval, segm) on these two files."""
    data = realdata / "fashionpedia" / "data"
    scores = fp.evaluate(data / "sample.json", data / "fake_results.json", iou_types=("segm",))
    assert scores["segm/AP"] == pytest.approx(0.5896693442929197, abs=1e-9)
    assert "segm/iou/AP" in scores and "segm/coco/AP" in scores


def test_cli(tmp_path, capsys):
    from saip_bench.cli import main

    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(tiny_gt()))
    pred_path.write_text(json.dumps(dets([1, 281])))
    assert main(["metric", "fashionpedia", "--gt", str(gt_path), "--pred", str(pred_path),
                 "--iou-type", "bbox", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bbox/AP"] == pytest.approx(1.0)
