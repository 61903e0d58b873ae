"""CrowdHuman AP / MR^-2 / JI on hand-computed fixtures, one rule per test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from saip_bench.errors import DataFormatError
from saip_bench.metrics import crowdhuman as ch


def person(x, y, w, h, ignore=0):
    return {"tag": "person", "fbox": [x, y, w, h], "vbox": [x, y, w, h], "hbox": [x, y, 5, 5],
            "extra": {"box_id": 0, "occ": 0, "ignore": ignore}, "head_attr": {}}


def mask(x, y, w, h):
    return {"tag": "mask", "fbox": [x, y, w, h], "vbox": [x, y, w, h], "hbox": [x, y, w, h],
            "extra": {"ignore": 1}, "head_attr": {}}


def det(x, y, w, h, score):
    return {"box": [x, y, w, h], "score": score, "tag": 1}


def result(image_id, dets, height=200, width=200):
    return {"ID": image_id, "height": height, "width": width, "dtboxes": dets}


def test_gt_tags_follow_crowddet_rules():
    gt = ch.gt_boxes_from_record({"ID": "a", "gtboxes": [person(0, 0, 10, 20), person(5, 5, 10, 10, ignore=1),
                                                          mask(50, 50, 10, 10)]})
    assert gt[:, 4].tolist() == [1, -1, -1]
    assert gt[0, :4].tolist() == [0, 0, 10, 20]  # x, y, w, h -> x1 y1 x2 y2


def test_perfect_detections_give_ap_one_mr_zero_ji_one():
    gt = [{"ID": "1,a", "gtboxes": [person(10, 10, 40, 80), person(100, 10, 40, 80)]}]
    pred = [result("1,a", [det(10, 10, 40, 80, 0.9), det(100, 10, 40, 80, 0.8)])]
    scores = ch.evaluate(gt, pred)
    # AP: two TPs -> recall 0.5, 1.0 at precision 1: trapezoid from the first point = 0.5 (no segment from 0)
    assert scores["AP"] == pytest.approx(0.5)
    assert scores["MR"] == 0.0
    assert scores["JI"] == pytest.approx(2 / (2 + 2 - 2 + 1e-6))


def test_detection_inside_ignore_region_is_swallowed():
    gt = [{"ID": "a", "gtboxes": [person(10, 10, 40, 80), mask(100, 100, 50, 50)]}]
    swallowed = [det(10, 10, 40, 80, 0.9), det(110, 110, 20, 20, 0.95)]  # IoA 1.0 on the mask
    scores = ch.evaluate(gt, [result("a", swallowed)])
    assert scores["AP"] == 0.0  # one TP only: a single point has no trapezoid
    assert scores["MR"] == 0.0  # no FP at all
    flags = ch.match_caltech(ch.build_images(gt, [result("a", swallowed)])[0])
    assert flags == [(0.9, 1)]
    # half outside the mask (IoA = 0.4 < 0.5) -> FP
    partial = [det(10, 10, 40, 80, 0.9), det(130, 110, 50, 20, 0.95)]
    flags = ch.match_caltech(ch.build_images(gt, [result("a", partial)])[0])
    assert flags == [(0.95, 0), (0.9, 1)]


def test_ignored_person_does_not_count_as_gt():
    gt = [{"ID": "a", "gtboxes": [person(10, 10, 40, 80), person(100, 10, 40, 80, ignore=1)]}]
    scores = ch.evaluate(gt, [result("a", [det(10, 10, 40, 80, 0.9), det(100, 10, 40, 80, 0.8)])])
    assert scores["num_gt"] == 1
    assert scores["MR"] == 0.0


def test_ap_is_raw_trapezoid_without_envelope():
    # 3 GT in one image; ranked list: TP, FP, TP, TP -> recall 1/3, 1/3, 2/3, 1; precision 1, 1/2, 2/3, 3/4
    boxes = [(0, 0, 20, 40), (50, 0, 20, 40), (100, 0, 20, 40)]
    gt = [{"ID": "a", "gtboxes": [person(*b) for b in boxes]}]
    dets = [det(*boxes[0], 0.9), det(150, 150, 20, 20, 0.8), det(*boxes[1], 0.7), det(*boxes[2], 0.6)]
    scores = ch.evaluate(gt, [result("a", dets)])
    recall = [1 / 3, 1 / 3, 2 / 3, 1.0]
    precision = [1.0, 0.5, 2 / 3, 0.75]
    expected = sum((recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2 for i in range(1, 4))
    assert scores["AP"] == pytest.approx(expected, abs=1e-12)


def test_mr_uses_first_index_with_fppi_at_least_reference():
    # 2 images, 4 GT; ranked: FP(0.9), TP, FP, TP -> fppi 0.5, 0.5, 1.0, 1.0; miss 1, .75, .75, .5
    gt = [{"ID": "a", "gtboxes": [person(0, 0, 20, 40), person(50, 0, 20, 40)]},
          {"ID": "b", "gtboxes": [person(0, 0, 20, 40), person(50, 0, 20, 40)]}]
    pred = [result("a", [det(150, 150, 20, 20, 0.9), det(0, 0, 20, 40, 0.8)]),
            result("b", [det(150, 150, 20, 20, 0.7), det(0, 0, 20, 40, 0.6)])]
    scores = ch.evaluate(gt, pred)
    # refs 0.01..0.3162 -> first index (fppi 0.5) miss 1.0; 0.5623 and 1.0 -> index 2 (fppi 1.0) miss 0.75
    expected = math.exp((7 * math.log(1.0) + 2 * math.log(0.75)) / 9)
    assert scores["MR"] == pytest.approx(expected, abs=1e-12)


def test_mr_falls_back_to_last_index_when_fppi_never_reaches_reference():
    gt = [{"ID": str(i), "gtboxes": [person(0, 0, 20, 40), person(50, 0, 20, 40)]} for i in range(200)]
    extra_fp = [det(150, 150, 9, 9, 0.1)]
    pred = [result(str(i), [det(0, 0, 20, 40, 0.9)] + ([] if i else extra_fp)) for i in range(200)]
    scores = ch.evaluate(gt, pred)
    # FPPI reaches 1/200 = 0.005 < 0.01 only: every reference point takes the last index (miss 0.5)
    assert scores["MR"] == pytest.approx(0.5, abs=1e-12)


def test_boxes_are_clipped_to_the_image():
    # GT runs off the right edge; the detection covers only the visible part -> TP after clipping
    gt = [{"ID": "a", "gtboxes": [person(150, 10, 100, 80)]}]
    pred = [result("a", [det(150, 10, 50, 80, 0.9)], height=100, width=200)]
    flags = ch.match_caltech(ch.build_images(gt, pred)[0])
    assert flags == [(0.9, 1)]
    clipped = ch.clip_boxes(np.array([[-5.0, -5.0, 300.0, 300.0]]), 100, 200)
    assert clipped.tolist() == [[0.0, 0.0, 200.0, 100.0]]
    clipped = ch.clip_boxes(np.array([[250.0, 120.0, 300.0, 300.0]]), 100, 200)
    assert clipped.tolist() == [[199.0, 99.0, 200.0, 100.0]]


def test_ji_per_threshold_and_max():
    # image a: 2 GT; dets: TP 0.95, TP 0.35, FP 0.05 -> per threshold k/(m+n-k)
    gt = [{"ID": "a", "gtboxes": [person(0, 0, 20, 40), person(50, 0, 20, 40)]}]
    pred = [result("a", [det(0, 0, 20, 40, 0.95), det(50, 0, 20, 40, 0.35), det(150, 150, 9, 9, 0.05)])]
    scores = ch.evaluate(gt, pred)
    assert scores["JI@0.0"] == pytest.approx(2 / (2 + 3 - 2 + 1e-6))
    assert scores["JI@0.1"] == pytest.approx(2 / (2 + 2 - 2 + 1e-6))
    assert scores["JI@0.4"] == pytest.approx(1 / (2 + 1 - 1 + 1e-6))
    assert scores["JI"] == scores["JI@0.1"]


def test_ji_ignore_regions_remove_unmatched_dets_and_gts():
    # an unmatched detection inside a mask leaves n; a GT person inside the mask, unmatched, leaves m
    gt = [{"ID": "a", "gtboxes": [person(0, 0, 20, 40), person(110, 110, 10, 10), mask(100, 100, 50, 50)]}]
    pred = [result("a", [det(0, 0, 20, 40, 0.9), det(120, 130, 10, 10, 0.9)])]
    scores = ch.evaluate(gt, pred)
    # k = 1, n = 2 - 1, m = 2 - 1 -> 1 / (1 + 1 - 1)
    assert scores["JI@0.0"] == pytest.approx(1 / (1 + 1e-6))


def test_ji_uses_maximum_weight_matching():
    # greedy by score would pair d0 with g0 (IoU .82) and leave d1 unmatched; the optimum pairs both
    gt = [{"ID": "a", "gtboxes": [person(0, 0, 100, 100), person(20, 0, 100, 100)]}]
    pred = [result("a", [det(10, 0, 100, 100, 0.9), det(30, 0, 100, 100, 0.8)], height=300, width=300)]
    image = ch.build_images(gt, pred)[0]
    matches = ch.max_weight_matching(image.dt[:, :4], image.gt[:, :4])
    assert sorted(matches) == [(0, 0), (1, 1)]


def test_images_without_gt_or_dets_are_skipped_in_ji_mean():
    gt = [{"ID": "a", "gtboxes": [person(0, 0, 20, 40)]}, {"ID": "b", "gtboxes": []}]
    pred = [result("a", [det(0, 0, 20, 40, 0.9)]), result("b", [])]
    assert ch.evaluate(gt, pred)["JI"] == pytest.approx(1 / (1 + 1e-6))


def test_missing_size_or_record_is_a_clear_error(tmp_path):
    gt = [{"ID": "a", "gtboxes": [person(0, 0, 20, 40)]}]
    with pytest.raises(DataFormatError, match="height"):
        ch.evaluate(gt, [{"ID": "a", "dtboxes": []}])
    with pytest.raises(DataFormatError, match="every GT image"):
        ch.evaluate(gt, [])
    bad = tmp_path / "bad.odgt"
    bad.write_text('{"ID": "a"}\nnot json\n')
    with pytest.raises(DataFormatError, match="bad.odgt:2"):
        ch.read_odgt(bad)


def test_cli_prints_json(tmp_path, capsys):
    from saip_bench.cli import main

    gt_path, pred_path = tmp_path / "gt.odgt", tmp_path / "pred.odgt"
    gt_path.write_text(json.dumps({"ID": "1,a", "gtboxes": [person(0, 0, 20, 40)]}) + "\n")
    pred_path.write_text(json.dumps(result("1,a", [det(0, 0, 20, 40, 0.9)])) + "\n")
    assert main(["metric", "crowdhuman", "--gt", str(gt_path), "--pred", str(pred_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["MR"] == 0.0 and "JI" in out and "AP" in out
