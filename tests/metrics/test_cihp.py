"""CIHP instance-part AP^r (CIHP_PGN rules) on hand-computed fixtures, and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from saip_bench.errors import DataFormatError
from saip_bench.metrics import cihp


def two_people() -> tuple[np.ndarray, dict[int, int]]:
    gt = np.zeros((20, 40), dtype=np.int64)
    gt[0:10, 0:10] = 2  # hair of human 1 (value = class + 20 * 0)
    gt[0:10, 20:30] = 22  # hair of human 2 (value = class + 20 * 1)
    return gt, {2: 2, 22: 2}


def test_exact_predictions_give_ap_one():
    gt, classes = two_people()
    scores = cihp.instance_ap([(gt, classes, gt.copy(), [(2, 2, 0.9), (22, 2, 0.8)])])
    assert scores["APr50"] == pytest.approx(1.0)
    assert scores["APr_vol"] == pytest.approx(1.0)
    assert scores["num_classes_with_gt"] == 1


def test_matching_has_no_exclusivity_and_uses_strict_threshold():
    gt, classes = two_people()
    pred = np.zeros_like(gt)
    pred[0:10, 0:10] = 1  # exact copy of human 1's hair
    pred[0:10, 20:25] = 2  # half of human 2's hair: IoU exactly 0.5 -> not > 0.5
    preds = [(1, 2, 0.9), (2, 2, 0.8)]
    scores = cihp.instance_ap([(gt, classes, pred, preds)])
    # t = 0.5: ranked TP, FP -> recall .5, .5; precision 1, .5 -> VOC AP = 0.5 * 1
    assert scores["APr@0.5"] == pytest.approx(0.5)
    # t = 0.4: both TP -> AP 1
    assert scores["APr@0.4"] == pytest.approx(1.0)
    # duplicate of the same GT: both count as TP (no exclusivity)
    dup = np.zeros_like(gt)
    dup[0:10, 0:10] = 1
    scores = cihp.instance_ap([(gt, classes, dup, [(1, 2, 0.9)]),
                               (gt, classes, dup, [(1, 2, 0.8)])])
    # 4 GT in total, 2 TP -> recall .25, .5 at precision 1 -> AP .5
    assert scores["APr@0.5"] == pytest.approx(0.5)


def test_envelope_and_score_ranking():
    gt, classes = two_people()
    pred = np.zeros_like(gt)
    pred[15:20, 0:5] = 1  # FP with the highest score
    pred[0:10, 0:10] = 2
    pred[0:10, 20:30] = 3
    scores = cihp.instance_ap([(gt, classes, pred, [(1, 2, 0.99), (2, 2, 0.5), (3, 2, 0.4)])])
    # ranked FP, TP, TP: precision 0, 1/2, 2/3 -> envelope 2/3 over recall 0..1
    assert scores["APr@0.5"] == pytest.approx(2 / 3)


def test_classes_without_gt_are_left_out_of_the_mean():
    gt, classes = two_people()
    pred = gt.copy()
    pred[15:20, 0:5] = 7  # a predicted 'glove' (class 3): no glove GT anywhere
    preds = [(2, 2, 0.9), (22, 2, 0.8), (7, 3, 0.7)]
    scores = cihp.instance_ap([(gt, classes, pred, preds)])
    assert scores["num_classes_with_gt"] == 1
    assert scores["APr50"] == pytest.approx(1.0)


def test_gt_classes_from_txt_or_derived(tmp_path, realdata):
    txt = realdata / "cihp" / "evaluation" / "Instance_part_val" / "0000001.txt"
    shutil.copy(txt, tmp_path / "0000001.txt")
    values = [int(line.split()[0]) for line in txt.read_text().splitlines() if line.strip()]
    image = np.zeros((4, len(values)), dtype=np.uint8)
    image[0] = values
    Image.fromarray(image, mode="L").save(tmp_path / "0000001.png")
    parts = cihp.gt_parts(tmp_path / "0000001.png")
    assert parts[22] == 2 and parts[75] == 15 and len(parts) == len(values)
    # without the txt: class = majority Category_ids class, else value % 20 (CIHP_PGN encoding)
    (tmp_path / "0000001.txt").unlink()
    assert cihp.gt_parts(tmp_path / "0000001.png")[75] == 15
    category = (image % 20).astype(np.uint8)
    category[0, values.index(22)] = 3
    Image.fromarray(category, mode="L").save(tmp_path / "cat.png")
    assert cihp.gt_parts(tmp_path / "0000001.png", tmp_path / "cat.png")[22] == 3


def test_missing_prediction_txt_is_a_clear_error(tmp_path):
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8), mode="L").save(tmp_path / "a.png")
    with pytest.raises(DataFormatError, match="a.txt"):
        cihp.pred_parts(tmp_path / "a.png")


def test_cli_semantic_and_instances(tmp_path, capsys):
    from saip_bench.cli import main

    gt, _ = two_people()
    for name in ("gt_inst", "gt_cat", "pred_inst", "pred_sem"):
        (tmp_path / name).mkdir()
    Image.fromarray(gt.astype(np.uint8), mode="L").save(tmp_path / "gt_inst" / "0000001.png")
    semantic = (gt % 20).astype(np.uint8)
    Image.fromarray(semantic, mode="L").save(tmp_path / "gt_cat" / "0000001.png")
    Image.fromarray(semantic, mode="L").save(tmp_path / "pred_sem" / "0000001.png")
    Image.fromarray(gt.astype(np.uint8), mode="L").save(tmp_path / "pred_inst" / "0000001.png")
    lines = ["0 0.0"] * 22
    lines[1], lines[21] = "2 0.9", "2 0.8"  # value 2 -> line 2, value 22 -> line 22
    (tmp_path / "pred_inst" / "0000001.txt").write_text("\n".join(lines) + "\n")
    argv = ["metric", "cihp", "--gt-categories", str(tmp_path / "gt_cat"), "--pred-semantic",
            str(tmp_path / "pred_sem"), "--gt-instances", str(tmp_path / "gt_inst"), "--pred-instances",
            str(tmp_path / "pred_inst"), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mIoU"] == pytest.approx(2 / 20)  # background + hair perfect, 18 absent classes count 0
    assert out["APr50"] == pytest.approx(1.0)
