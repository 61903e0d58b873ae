"""Keypoint metrics on the real COCO val2017 sample, cross-checked against pycocotools, xtcocotools and
mmpose's own CocoMetric / CocoWholeBodyMetric; whole-body part rules on hand-made 133-point GT."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from saip_bench.cli import main
from saip_bench.errors import DataFormatError
from saip_bench.metrics.keypoints import (
    COCO_SIGMAS,
    STAT_NAMES,
    WHOLEBODY_PARTS,
    WHOLEBODY_SIGMAS,
    coco_keypoint_ap,
    split_wholebody,
    wholebody_ap,
)


@pytest.fixture(scope="module")
def coco_gt(realdata) -> Path:
    return realdata / "coco_keypoints" / "tests" / "data" / "coco" / "test_coco.json"


def gt_as_results(gt_file: Path) -> list[dict]:
    data = json.loads(gt_file.read_text())
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]


def perturbed_results(gt_file: Path, seed: int = 0) -> list[dict]:
    """GT keypoints moved by a few pixels, random scores, plus one false positive per image."""
    rng = np.random.default_rng(seed)
    results = []
    for item in gt_as_results(gt_file):
        points = np.array(item["keypoints"], float).reshape(-1, 3)
        points[:, :2] += rng.normal(0, 6, size=(len(points), 2))
        points[:, 2] = rng.uniform(0.1, 1.0, len(points))
        score = float(rng.uniform(0.3, 1))
        results.append({**item, "keypoints": points.reshape(-1).tolist(), "score": score})
    for image_id in sorted({r["image_id"] for r in results}):
        fake = rng.uniform(0, 300, size=(17, 3))
        results.append({"image_id": image_id, "category_id": 1, "keypoints": fake.reshape(-1).tolist(),
                        "score": 0.5})
    return results


def pycocotools_stats(gt_file: Path, results: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def test_sigmas_match_pycocotools_and_mmpose():
    from mmengine.config import Config
    from pycocotools.cocoeval import Params

    np.testing.assert_allclose(COCO_SIGMAS, Params(iouType="keypoints").kpt_oks_sigmas)
    import mmpose

    config = Path(mmpose.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / "coco_wholebody.py"
    np.testing.assert_allclose(WHOLEBODY_SIGMAS, Config.fromfile(str(config)).dataset_info["sigmas"])


def test_gt_as_predictions_gives_ap_one(coco_gt):
    scores = coco_keypoint_ap(coco_gt, gt_as_results(coco_gt))
    assert scores["AP"] == pytest.approx(1.0) and scores["AR"] == pytest.approx(1.0)
    assert set(scores) == set(STAT_NAMES)


def test_perturbed_matches_pycocotools_exactly(coco_gt):
    results = perturbed_results(coco_gt)
    ours = coco_keypoint_ap(coco_gt, results)
    reference = pycocotools_stats(coco_gt, results)
    assert [ours[name] for name in STAT_NAMES] == reference
    assert 0.2 < ours["AP"] < 0.99  # the perturbation is visible, not degenerate


def test_perturbed_matches_xtcocotools_and_mmpose_coco_metric(coco_gt, tmp_path):
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.evaluation.metrics import CocoMetric
    from xtcocotools.coco import COCO as XtCOCO
    from xtcocotools.cocoeval import COCOeval as XtCOCOeval

    results = perturbed_results(coco_gt, seed=1)
    ours = coco_keypoint_ap(coco_gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = XtCOCO(str(coco_gt))
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = XtCOCOeval(gt, dt, "keypoints", COCO_SIGMAS, use_area=True)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert [ours[name] for name in STAT_NAMES] == pytest.approx(list(evaluator.stats), abs=1e-12)

    # mmpose's CocoMetric with rescoring and NMS off scores the same detections identically.
    metric = CocoMetric(ann_file=str(coco_gt), score_mode="bbox", nms_mode="none",
                        outfile_prefix=str(tmp_path / "mmpose"))
    import mmpose

    base = Path(mmpose.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / "coco.py"
    metric.dataset_meta = parse_pose_metainfo({"from_file": str(base)})
    samples = []
    for index, item in enumerate(results):
        points = np.array(item["keypoints"]).reshape(1, 17, 3)
        samples.append({"id": index, "img_id": item["image_id"], "gt_instances": {},
                        "pred_instances": {"keypoints": points[..., :2], "keypoint_scores": points[..., 2],
                                           "bbox_scores": np.array([item["score"]])}})
    metric.process([], samples)
    with contextlib.redirect_stdout(io.StringIO()):
        mm = metric.compute_metrics(metric.results)
    assert mm["AP"] == pytest.approx(ours["AP"], abs=1e-12)
    assert mm["AR"] == pytest.approx(ours["AR"], abs=1e-12)


def test_image_ids_restrict_evaluation(coco_gt):
    results = gt_as_results(coco_gt)
    first = results[0]["image_id"]
    only_first = [r for r in results if r["image_id"] == first]
    assert coco_keypoint_ap(coco_gt, only_first)["AR"] < 1.0  # other images' people are missed
    assert coco_keypoint_ap(coco_gt, only_first, image_ids=[first])["AR"] == pytest.approx(1.0)


def test_bad_results_are_named(coco_gt, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "score": 1.0, "keypoints": [0, 0, 1]}]))
    with pytest.raises(DataFormatError, match="51 numbers"):
        coco_keypoint_ap(coco_gt, bad)
    with pytest.raises(DataFormatError, match="nothing at that path"):
        coco_keypoint_ap(tmp_path / "none.json", gt_as_results(coco_gt))


def test_cli_coco_keypoints_json(coco_gt, tmp_path, capsys):
    pred = tmp_path / "results.json"
    pred.write_text(json.dumps(perturbed_results(coco_gt)))
    assert main(["metric", "coco-keypoints", "--gt", str(coco_gt), "--pred", str(pred), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == pytest.approx(coco_keypoint_ap(coco_gt, pred))
    assert main(["metric", "coco-keypoints", "--gt", str(coco_gt), "--pred", str(pred)]) == 0
    assert "AP50" in capsys.readouterr().out


# ---- COCO-WholeBody --------------------------------------------------------------------------------

def person(rng: np.random.Generator, x0: float, y0: float, parts: set[str]) -> dict:
    """A 133-point GT person (in the official split keys) with only ``parts`` labelled."""
    ann: dict = {"bbox": [x0, y0, 100, 200], "area": 12000.0, "iscrowd": 0, "category_id": 1}
    for name, key, count in WHOLEBODY_PARTS:
        points = np.zeros((count, 3))
        if name in parts:
            points[:, 0] = x0 + rng.uniform(5, 95, count)
            points[:, 1] = y0 + rng.uniform(5, 195, count)
            points[:, 2] = 2 if name in ("body", "foot") else 1.0
        ann[key] = points.reshape(-1).tolist()
    for name in ("face", "lefthand", "righthand", "foot"):
        ann[f"{name}_valid"] = name in parts
        if name != "foot":
            ann[f"{name}_box"] = [x0, y0, 30, 30] if name in parts else [0, 0, 0, 0]
    labelled = [np.count_nonzero(np.array(ann[k][2::3])) for _, k, _ in WHOLEBODY_PARTS[:2]]
    ann["num_keypoints"] = int(sum(labelled))
    return ann


@pytest.fixture(scope="module")
def wholebody_gt(tmp_path_factory) -> Path:
    """Image 1: a person with every part. Image 2: one with body + face only (no hands, no feet)."""
    rng = np.random.default_rng(0)
    annotations = [person(rng, 50, 20, {"body", "foot", "face", "lefthand", "righthand"}),
                   person(rng, 40, 30, {"body", "face"})]
    for index, (ann, image_id) in enumerate(zip(annotations, [1, 2], strict=True)):
        ann.update(id=index + 1, image_id=image_id)
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 300, "height": 300} for i in (1, 2)],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
    path = tmp_path_factory.mktemp("wholebody") / "coco_wholebody_val_v1.0.json"
    path.write_text(json.dumps(data))
    return path


def wholebody_results(gt_file: Path, noise: float, seed: int = 0, zero_hands_image: int | None = None):
    rng = np.random.default_rng(seed)
    out = []
    for ann in json.loads(gt_file.read_text())["annotations"]:
        points = np.concatenate([np.array(ann[key], float).reshape(-1, 3) for _, key, _ in WHOLEBODY_PARTS])
        points[:, :2] += rng.normal(0, noise, size=(133, 2))
        points[:, 2] = 0.9
        if ann["image_id"] == zero_hands_image:
            points[91:, 2] = 0.0  # a detection with no hand scores is dropped from the hand runs
        out.append({"image_id": ann["image_id"], "category_id": 1, "score": 0.9, **split_wholebody(points)})
    return out


def test_wholebody_gt_as_predictions_is_one_everywhere_parts_ignore_unlabelled(wholebody_gt):
    scores = wholebody_ap(wholebody_gt, wholebody_results(wholebody_gt, noise=0.0))
    for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody"):
        assert scores[f"{part}/AP"] == pytest.approx(1.0), part
    # person 2 has no hands/feet: its GT is ignored in those runs, so its detection is no false positive;
    # dropping the hand scores of person 1 leaves the hand runs with no detection at all.
    dropped = wholebody_ap(wholebody_gt, wholebody_results(wholebody_gt, 0.0, zero_hands_image=1))
    assert dropped["lefthand/AP"] == 0.0 and dropped["body/AP"] == pytest.approx(1.0)


def test_wholebody_matches_xtcocotools_and_mmpose(wholebody_gt, tmp_path):
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.evaluation.metrics import CocoWholeBodyMetric
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    results = wholebody_results(wholebody_gt, noise=4.0, seed=3)
    ours = wholebody_ap(wholebody_gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(wholebody_gt))
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, dt, "keypoints_face", WHOLEBODY_SIGMAS[23:91], use_area=True)
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert ours["face/AP"] == pytest.approx(evaluator.stats[0], abs=1e-12)
    assert 0.0 < ours["wholebody/AP"] < 1.0

    import mmpose

    base = Path(mmpose.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / "coco_wholebody.py"
    metric = CocoWholeBodyMetric(ann_file=str(wholebody_gt), score_mode="bbox", nms_mode="none",
                                 outfile_prefix=str(tmp_path / "mm"))
    metric.dataset_meta = parse_pose_metainfo({"from_file": str(base)})
    samples = []
    for index, item in enumerate(results):
        points = np.concatenate([np.array(item[key]).reshape(-1, 3) for _, key, _ in WHOLEBODY_PARTS])[None]
        samples.append({"id": index, "img_id": item["image_id"], "gt_instances": {},
                        "pred_instances": {"keypoints": points[..., :2], "keypoint_scores": points[..., 2],
                                           "bbox_scores": np.array([item["score"]])}})
    metric.process([], samples)
    with contextlib.redirect_stdout(io.StringIO()):
        mm = metric.compute_metrics(metric.results)
    assert mm["AP"] == pytest.approx(ours["wholebody/AP"], abs=1e-12)


def test_cli_wholebody(wholebody_gt, tmp_path, capsys):
    pred = tmp_path / "wb.json"
    pred.write_text(json.dumps(wholebody_results(wholebody_gt, noise=0.0)))
    assert main(["metric", "wholebody", "--gt", str(wholebody_gt), "--pred", str(pred), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["wholebody/AP"] == pytest.approx(1.0) and "righthand/AR" in printed


def test_wholebody_rejects_plain_coco_gt(coco_gt, wholebody_gt):
    with pytest.raises(DataFormatError, match="foot_kpts"):
        wholebody_ap(coco_gt, wholebody_results(wholebody_gt, noise=0.0))
