"""Bootstrap intervals: each family's fast weighted statistic equals scoring the resampled units directly
(the metric itself on duplicated queries/images, or the official accumulate on duplicated per-image
matches); intervals cover the point estimate, shrink with more samples and are fixed by the seed."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saip_bench.metrics import bootstrap
from saip_bench.metrics import crowdhuman as crowd
from saip_bench.metrics import fashionpedia as fp
from saip_bench.metrics.attributes import evaluate_attributes
from saip_bench.metrics.keypoints import coco_keypoint_ap
from saip_bench.metrics.parsing import evaluate_pairs
from saip_bench.metrics.reid import evaluate_reid
from saip_bench.metrics.retrieval import evaluate_retrieval

CONFIG = bootstrap.BootstrapConfig(resamples=24, seed=3)


def collected(function, *args, config: bootstrap.BootstrapConfig = CONFIG, **kwargs):
    with bootstrap.collecting(config) as collector:
        scores = function(*args, **kwargs)
    return scores, collector


def direct(n: int, score_of, config: bootstrap.BootstrapConfig = CONFIG) -> tuple[float, float]:
    """The interval from scoring every resample with the metric itself (drawn units in sorted order)."""
    values = [score_of(np.sort(row)) for batch in bootstrap.resample_indices(n, config) for row in batch]
    return bootstrap.percentile_interval(np.asarray(values), config.level)


def assert_covers(scores: dict, intervals: dict, keys) -> None:
    for key in keys:
        low, high = intervals[key]
        assert low - 1e-9 <= scores[key] <= high + 1e-9, (key, scores[key], low, high)


# ------------------------------------------------------------------------------ families
def reid_inputs(seed: int = 0, num_q: int = 24, num_g: int = 60):
    rng = np.random.default_rng(seed)
    g_pids = np.repeat(np.arange(12), 5)
    g_cams = np.tile(np.arange(5), 12)
    q_pids = rng.integers(0, 12, num_q)
    q_cams = rng.integers(0, 5, num_q)
    dist = rng.random((num_q, num_g)) - 0.3 * (q_pids[:, None] == g_pids[None, :])
    return dist, q_pids, g_pids, q_cams, g_cams


def test_reid_matches_direct_resampling():
    dist, qp, gp, qc, gc = reid_inputs()
    scores, collector = collected(evaluate_reid, dist, qp, gp, qc, gc)
    for key in ("rank1", "mAP", "mINP"):
        expected = direct(len(qp), lambda i, key=key: evaluate_reid(dist[i], qp[i], gp, qc[i], gc)[key])
        np.testing.assert_allclose(collector.intervals[key], expected, atol=1e-9)
    assert_covers(scores, collector.intervals, ("rank1", "rank5", "mAP", "mINP"))
    assert collector.summary()["unit"] == "queries" and collector.summary()["n_units"] == len(qp)


def test_retrieval_matches_direct_resampling():
    rng = np.random.default_rng(1)
    text_pids, image_pids = rng.integers(0, 8, 30), np.repeat(np.arange(8), 3)
    sim = rng.random((30, 24)) + 0.4 * (text_pids[:, None] == image_pids[None, :])
    scores, collector = collected(evaluate_retrieval, sim, text_pids, image_pids)
    for key in ("R1", "mAP"):
        expected = direct(30, lambda i, key=key: evaluate_retrieval(sim[i], text_pids[i], image_pids)[key])
        np.testing.assert_allclose(collector.intervals[key], expected, atol=1e-9)
    assert_covers(scores, collector.intervals, ("R1", "R5", "R10", "mAP", "mINP"))


def test_attributes_match_direct_resampling():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (40, 6))
    probs = np.clip(labels * 0.6 + rng.random((40, 6)) * 0.5, 0, 1)
    scores, collector = collected(evaluate_attributes, probs, labels)
    for key in ("mA", "Acc", "F1"):
        expected = direct(40, lambda i, key=key: evaluate_attributes(probs[i], labels[i])[key])
        np.testing.assert_allclose(collector.intervals[key], expected, atol=1e-9)
    assert_covers(scores, collector.intervals, ("mA", "Acc", "Prec", "Rec", "F1"))


def test_parsing_matches_direct_resampling(tmp_path):
    rng = np.random.default_rng(3)
    pairs = []
    for index in range(10):
        gt = rng.integers(0, 4, (6, 7)).astype(np.uint8)
        pred = np.where(rng.random((6, 7)) < 0.7, gt, rng.integers(0, 4, (6, 7))).astype(np.uint8)
        gt[0, 0] = 255
        for name, array in (("gt", gt), ("pred", pred)):
            Image.fromarray(array, mode="L").save(tmp_path / f"{name}{index}.png")
        pairs.append((tmp_path / f"gt{index}.png", tmp_path / f"pred{index}.png"))
    scores, collector = collected(evaluate_pairs, pairs, 4)
    for key in ("mIoU", "pixel_acc", "mean_acc"):
        expected = direct(10, lambda i, key=key: evaluate_pairs([pairs[j] for j in i], 4)[key])
        np.testing.assert_allclose(collector.intervals[key], expected, atol=1e-12)
    assert_covers(scores, collector.intervals, ("mIoU", "pixel_acc", "mean_acc"))


def keypoint_case(tmp_path: Path) -> tuple[Path, list[dict]]:
    """8 images, 1-3 people each (some tiny), results = GT moved by noise + one false positive each."""
    rng = np.random.default_rng(4)
    images, annotations, results = [], [], []
    for image_id in range(1, 9):
        images.append({"id": image_id, "width": 400, "height": 400, "file_name": f"{image_id}.jpg"})
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(20, 200, 2)
            size = float(rng.uniform(40, 150))
            points = np.c_[x0 + rng.uniform(0, size, 17), y0 + rng.uniform(0, size, 17), np.full(17, 2)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "keypoints": points.reshape(-1).tolist(), "num_keypoints": 17,
                                "area": size * size, "bbox": [x0, y0, size, size], "iscrowd": 0})
            moved = points.copy()
            moved[:, :2] += rng.normal(0, size * 0.04, (17, 2))
            moved[:, 2] = 1.0
            results.append({"image_id": image_id, "category_id": 1, "keypoints": moved.reshape(-1).tolist(),
                            "score": float(rng.uniform(0.2, 1.0))})
        fake = np.c_[rng.uniform(0, 400, (17, 2)), np.ones(17)]
        results.append({"image_id": image_id, "category_id": 1, "keypoints": fake.reshape(-1).tolist(),
                        "score": float(rng.uniform(0.2, 1.0))})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, results


def official_resampled_ap(evaluator, summarize) -> callable:
    """Score one resample with the official accumulate: evalImgs rebuilt for the drawn image list (each
    drawn image's per-image matches repeated, in sorted order)."""
    p = evaluator.params
    num_img, num_area, num_cat = len(p.imgIds), len(p.areaRng), len(p.catIds)
    base = list(evaluator.evalImgs)

    def score(indices: np.ndarray) -> float:
        copy_eval = copy.copy(evaluator)
        params = copy.deepcopy(p)
        params.imgIds = list(range(len(indices)))
        copy_eval.params, copy_eval._paramsEval = params, copy.deepcopy(params)
        copy_eval.evalImgs = [base[k * num_area * num_img + a * num_img + i]
                              for k in range(num_cat) for a in range(num_area) for i in indices]
        with contextlib.redirect_stdout(io.StringIO()):
            copy_eval.accumulate()
            return summarize(copy_eval)

    return score


def test_coco_keypoints_match_official_accumulate_on_resampled_images(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_file, results = keypoint_case(tmp_path)
    scores, collector = collected(coco_keypoint_ap, gt_file, results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
        evaluator.evaluate()

    def summarize(e) -> float:
        e.summarize()
        return float(e.stats[0])

    expected = direct(8, official_resampled_ap(evaluator, summarize))
    np.testing.assert_allclose(collector.intervals["AP"], expected, atol=1e-12)
    assert_covers(scores, collector.intervals, ("AP",))
    assert 0.0 < collector.intervals["AP"][0] < collector.intervals["AP"][1] <= 1.0


def fashion_case() -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(5)
    gt = {"images": [], "annotations": [],
          "categories": [{"id": i, "name": f"c{i}", "supercategory": "x"} for i in range(46)],
          "attributes": [{"id": a, "name": f"a{a}", "supercategory": "y"} for a in (0, 1, 2, 5)]}
    results = []
    for image_id in range(1, 9):
        gt["images"].append({"id": image_id, "width": 100, "height": 100, "file_name": f"{image_id}.jpg"})
        for category in (0, 13):
            x, y = rng.uniform(5, 60, 2)
            attributes = [int(a) for a in (0, 1, 2, 5) if rng.random() < 0.5] if category == 0 else []
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": category,
                "attribute_ids": attributes, "bbox": [x, y, 30, 30], "area": 900, "iscrowd": 0,
                "segmentation": [[x, y, x + 30, y, x + 30, y + 30, x, y + 30]]})
            guess = [a for a in (0, 1, 2, 5) if rng.random() < 0.5] if category == 0 else []
            jitter = rng.normal(0, 4, 2)
            results.append({"image_id": image_id, "category_id": category, "attribute_ids": guess,
                            "bbox": [x + jitter[0], y + jitter[1], 30, 30],
                            "score": float(rng.uniform(0.1, 1))})
    return gt, results


def test_fashionpedia_matches_official_accumulate_on_resampled_images():
    gt, results = fashion_case()
    scores, collector = collected(fp.evaluate, copy.deepcopy(gt), copy.deepcopy(results), ("bbox",))
    gt_coco = fp.load_ground_truth(copy.deepcopy(gt))
    evaluator = fp.FashionpediaEval(gt_coco, fp.load_results(gt_coco, copy.deepcopy(results)), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    expected = direct(8, official_resampled_ap(evaluator, lambda e: e._summarize_one("ap")))
    np.testing.assert_allclose(collector.intervals["bbox/AP"], expected, atol=1e-12)
    assert_covers(scores, collector.intervals, ("bbox/AP",))


def test_fashionpedia_images_without_detections_still_match_the_official_accumulate():
    """A category's image with GT but no detection has a (T, 0) match array (a frozen smoke unit hit it)."""
    gt, results = fashion_case()
    results = [r for r in results if r["image_id"] > 3 or r["category_id"] != 13]
    scores, collector = collected(fp.evaluate, copy.deepcopy(gt), copy.deepcopy(results), ("bbox",))
    gt_coco = fp.load_ground_truth(copy.deepcopy(gt))
    evaluator = fp.FashionpediaEval(gt_coco, fp.load_results(gt_coco, copy.deepcopy(results)), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    expected = direct(8, official_resampled_ap(evaluator, lambda e: e._summarize_one("ap")))
    np.testing.assert_allclose(collector.intervals["bbox/AP"], expected, atol=1e-12)
    assert_covers(scores, collector.intervals, ("bbox/AP",))


def crowd_case() -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(6)
    gt_records, pred_records = [], []
    for index in range(10):
        boxes, dets = [], []
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 150, 2)
            boxes.append({"tag": "person", "fbox": [x, y, 40, 80]})
            if rng.random() < 0.8:
                dets.append({"box": [x + rng.normal(0, 5), y + rng.normal(0, 5), 40, 80],
                             "score": float(rng.uniform(0.05, 1)), "tag": 1})
        dets.append({"box": [float(rng.uniform(0, 150)), 150.0, 30, 40], "score": float(rng.uniform(0.05, 1)),
                     "tag": 1})
        gt_records.append({"ID": f"im{index}", "gtboxes": boxes})
        pred_records.append({"ID": f"im{index}", "height": 300, "width": 300, "dtboxes": dets})
    return gt_records, pred_records


def test_crowdhuman_matches_direct_resampling():
    gt_records, pred_records = crowd_case()
    scores, collector = collected(crowd.evaluate, gt_records, pred_records)

    def rescored(indices: np.ndarray) -> dict:
        gt = [{**gt_records[i], "ID": f"{j}"} for j, i in enumerate(indices)]
        pred = [{**pred_records[i], "ID": f"{j}"} for j, i in enumerate(indices)]
        return crowd.evaluate(gt, pred)

    for key in ("AP", "MR", "JI"):
        expected = direct(10, lambda i, key=key: rescored(i)[key])
        np.testing.assert_allclose(collector.intervals[key], expected, atol=1e-12)
    assert_covers(scores, collector.intervals, ("AP", "MR", "JI"))


# ------------------------------------------------------------------------------ general properties
def test_intervals_shrink_with_more_samples():
    rng = np.random.default_rng(7)
    widths = []
    for n in (50, 5000):
        values = {"acc": (rng.random(n) < 0.6).astype(float)}
        low, high = bootstrap.bootstrap(bootstrap.ratio_statistic(values), n,
                                        bootstrap.BootstrapConfig(resamples=200))["acc"]
        widths.append(high - low)
    assert widths[1] < widths[0] / 5  # ~ 1/sqrt(n): 10x fewer points wide


def test_deterministic_per_seed_and_different_across_seeds():
    dist, qp, gp, qc, gc = reid_inputs(seed=8, num_q=40)
    runs = [collected(evaluate_reid, dist, qp, gp, qc, gc, config=bootstrap.BootstrapConfig(50, seed))[1]
            for seed in (0, 0, 1)]
    assert runs[0].intervals == runs[1].intervals
    assert runs[0].intervals != runs[2].intervals


def test_no_collection_outside_the_block_and_summary_is_record_ready():
    dist, qp, gp, qc, gc = reid_inputs()
    assert not bootstrap.active()
    evaluate_reid(dist, qp, gp, qc, gc)  # nothing to collect into: no error, no work
    _, collector = collected(evaluate_reid, dist, qp, gp, qc, gc)
    from saip_bench.specs import Uncertainty

    summary = Uncertainty.model_validate(collector.summary())
    assert summary.resamples == CONFIG.resamples and summary.seed == CONFIG.seed
    assert set(summary.intervals) == {"rank1", "rank5", "rank10", "mAP", "mINP"}


def test_config_is_checked():
    with pytest.raises(ValueError):
        bootstrap.BootstrapConfig(resamples=1)
    with pytest.raises(ValueError):
        bootstrap.BootstrapConfig(level=1.5)


def test_wholebody_interval_from_the_xtcocotools_evaluator(tmp_path):
    from saip_bench.metrics.keypoints import wholebody_ap
    from tests.metrics.test_keypoints import person, wholebody_results

    rng = np.random.default_rng(9)
    annotations = [person(rng, 20 + 10 * i, 30, {"body", "foot", "face", "lefthand", "righthand"})
                   for i in range(6)]
    for index, ann in enumerate(annotations):
        ann.update(id=index + 1, image_id=index + 1)
    data = {"images": [{"id": i + 1, "file_name": f"{i}.jpg", "width": 300, "height": 300} for i in range(6)],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
    gt_file = tmp_path / "wholebody.json"
    gt_file.write_text(json.dumps(data))
    results = wholebody_results(gt_file, noise=4.0)
    for index, item in enumerate(results):
        item["score"] = 0.3 + 0.1 * index  # distinct scores: no ties
    scores, collector = collected(wholebody_ap, gt_file, results)
    part_keys = [f"{part}/AP" for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody")]
    assert set(collector.intervals) == set(part_keys)  # every part's AP, not only the headline
    assert_covers(scores, collector.intervals, part_keys)
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    from saip_bench.metrics.keypoints import WHOLEBODY_SIGMAS

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints_wholebody", WHOLEBODY_SIGMAS,
                             use_area=True)
        evaluator.params.useSegm = None
        evaluator.evaluate()

    def summarize(e) -> float:
        e.summarize()
        return float(e.stats[0])

    expected = direct(6, official_resampled_ap(evaluator, summarize))
    np.testing.assert_allclose(collector.intervals["wholebody/AP"], expected, atol=1e-12)
    with contextlib.redirect_stdout(io.StringIO()):  # a part (foot): its own sigmas, its own matches
        foot = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints_foot", WHOLEBODY_SIGMAS[17:23],
                        use_area=True)
        foot.params.useSegm = None
        foot.evaluate()
    expected = direct(6, official_resampled_ap(foot, summarize))
    np.testing.assert_allclose(collector.intervals["foot/AP"], expected, atol=1e-12)
    again = collected(wholebody_ap, gt_file, results)[1]
    assert again.intervals == collector.intervals  # deterministic per seed


# ------------------------------------------------------------------------------ CIHP AP^r
def cihp_case(num_images: int = 7, seed: int = 4) -> list:
    """Images with a few GT parts of classes 2 and 5 and jittered predicted masks (distinct scores)."""
    rng = np.random.default_rng(seed)
    images = []
    scores = iter(rng.permutation(200) / 200 + 0.001)  # distinct: no ties in the ranking
    for _ in range(num_images):
        gt = np.zeros((24, 24), dtype=np.int64)
        pred = np.zeros_like(gt)
        classes, preds = {}, []
        for value, cls in ((1, 2), (2, 5), (3, 2)):
            if rng.random() < 0.2:
                continue  # some images lack a part
            y, x = rng.integers(0, 16, 2)
            gt[y:y + 6, x:x + 6] = value
            classes[value] = cls
            dy, dx = rng.integers(-2, 3, 2)
            pred_value = len(preds) + 1
            pred[max(0, y + dy):y + dy + 6, max(0, x + dx):x + dx + 6] = pred_value
            preds.append((pred_value, cls if rng.random() < 0.85 else 9, float(next(scores))))
        images.append((gt, classes, pred, preds))
    return images


def test_cihp_apr_matches_direct_resampling():
    from saip_bench.metrics.cihp import instance_ap

    images = cihp_case()
    scores, collector = collected(instance_ap, images)
    keys = ["APr50", "APr_vol", "APr@0.1", "APr@0.9"]
    assert_covers(scores, collector.intervals, keys)
    for key in keys:
        expected = direct(len(images), lambda drawn, key=key: instance_ap([images[i] for i in drawn])[key])
        np.testing.assert_allclose(collector.intervals[key], expected, atol=1e-12)
    assert collector.intervals["APr_vol"][0] < collector.intervals["APr_vol"][1]
    assert collected(instance_ap, images)[1].intervals == collector.intervals  # deterministic per seed
    other = collected(instance_ap, images, config=bootstrap.BootstrapConfig(24, seed=4))[1]
    assert other.intervals != collector.intervals
    assert instance_ap(images) == scores  # collecting changes no score
