"""COCO pose task on the synthetic world through the real reader: codec round trip, flip, both protocols,
official results format, box sources, re-scoring by the CLI metric, visualisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.cli import main
from saip_bench.data.readers import read_dataset
from saip_bench.metrics.keypoints import coco_keypoint_ap
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.dense.pose_task import _image_array
from saip_bench.tasks.dense.topdown import (
    TopDownPipeline,
    build_codec,
    codec_config,
    decode_to_image,
    flip_back,
    gt_instances,
    pose_meta,
    rescore,
)


@pytest.fixture(scope="module")
def coco(synth_world):
    return read_dataset("coco", synth_world / "coco")


def target_results(data, layout: str, kind: str, entry) -> list[dict]:
    """Encode every GT person into heatmaps with the training pipeline, decode them like predictions."""
    meta = pose_meta(layout)
    config = codec_config(kind, (128, 96), 1.0)
    pipeline = TopDownPipeline(meta, (128, 96), config, train=True, augment=False)
    codec = build_codec(config)
    results = []
    for instance in gt_instances(data.splits["val"], meta.num_keypoints, train=False):
        crop = pipeline(instance, _image_array(instance["path"]))
        points, scores = decode_to_image(codec, crop["heatmaps"].numpy(), crop["center"], crop["scale"],
                                         (128, 96))
        # labelled points inside the crop come back within a pixel (points the crop cuts off cannot)
        inside = (instance["keypoints"][:, 2] > 0) & (crop["weights"].numpy() > 0)
        assert np.abs(points[inside] - instance["keypoints"][inside, :2]).max() < 1.0
        results.append(entry(instance["image_id"], np.concatenate([points, scores[:, None]], 1)))
    return results


def test_udp_targets_decode_back_to_the_gt(coco):
    results = target_results(coco, "coco", "udp", lambda i, p: {
        "image_id": i, "category_id": 1, "keypoints": p.reshape(-1).tolist(), "score": 1.0})
    # not exactly 1: the synthetic world labels some points on or past the image border, outside the crop
    assert coco_keypoint_ap(coco.meta["gt_files"]["val"], results)["AP"] > 0.9


def test_flip_back_swaps_left_right_and_mirrors():
    meta = pose_meta("coco")
    heatmaps = torch.zeros(1, 17, 4, 6)
    heatmaps[0, 1, 2, 0] = 1.0  # left eye at the left edge of the mirrored crop
    restored = flip_back(heatmaps, meta.flip_indices, shift=False)
    assert restored[0, 2, 2, 5] == 1.0 and restored[0, 1].sum() == 0
    assert torch.equal(flip_back(restored, meta.flip_indices, shift=False), heatmaps)
    shifted = flip_back(heatmaps, meta.flip_indices, shift=True)
    assert shifted[0, 2, 2, 5] == 0 and shifted[0, 2, 2, 4] == 0  # moved one pixel right, off the edge


def test_rescore_is_box_score_times_confident_mean():
    assert rescore(np.array([0.9, 0.1, 0.5]), 0.5) == pytest.approx(0.5 * 0.7)
    assert rescore(np.array([0.1, 0.0]), 1.0) == 0.0


def run_unit(data, out, protocol="frozen", max_steps=4, num_workers=0, **params):
    spec = get_task_spec("pose", "coco").model_copy(deep=True)
    schedule = spec.protocols[protocol].schedule
    schedule.max_steps, schedule.batch_size = max_steps, 8
    spec.protocols[protocol].params.update({"input_size": [64, 48], "sigma": 1.0,
                                            "head": {"deconv_channels": [16, 16]}, **params})
    torch.manual_seed(0)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=create_backbone("vit_tiny", (64, 48)), data=data,
                      out_dir=out, cache_dir=out / "cache", visualize=2, show_progress=False, amp=False,
                      num_workers=num_workers)
    return get_task("pose").run(ctx)


@pytest.mark.parametrize("protocol", ["frozen", "finetune"])
def test_end_to_end_both_protocols(coco, tmp_path, protocol, capsys):
    result = run_unit(coco, tmp_path, protocol, max_steps=2)
    assert result.main_metric == "AP" and 0.0 <= result.main_score <= 1.0
    assert result.extra["box_source"] == "gt" and result.extra["steps"] == 2
    assert result.n_samples["train"]["effective"] == len(coco.splits["train"])
    (path,) = result.predictions
    assert path.name == "pose_val_results_gt-boxes.json"
    entries = json.loads(path.read_text())
    assert entries and all(len(e["keypoints"]) == 51 and e["category_id"] == 1 for e in entries)
    assert len(list((tmp_path / "vis").glob("*.png"))) == 2
    gt = coco.meta["gt_files"]["val"]
    assert main(["metric", "coco-keypoints", "--gt", gt, "--pred", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(result.scores)


def test_frozen_caches_features_learns_and_is_deterministic(coco, tmp_path):
    first = run_unit(coco, tmp_path / "a", max_steps=10)
    assert len(list((tmp_path / "a" / "cache").glob("pose-*.pt"))) == 1
    assert np.mean(first.extra["losses"][-3:]) < np.mean(first.extra["losses"][:3])
    second = run_unit(coco, tmp_path / "b", max_steps=10)
    assert first.scores == second.scores and first.extra["losses"] == second.extra["losses"]


def test_detected_boxes_are_an_option(coco, tmp_path):
    assert coco.meta.get("detection_files", {}).get("val"), "the synthetic world ships a detection file"
    result = run_unit(coco, tmp_path, max_steps=1, box_source="detections")
    assert result.extra["box_source"] == "detections"
    assert result.predictions[0].name == "pose_val_results_detections-boxes.json"
    detections = json.loads(open(coco.meta["detection_files"]["val"]).read())
    assert 0 < len(json.loads(result.predictions[0].read_text())) <= len(detections)


def test_finetune_with_loader_workers_matches_one_process(coco, tmp_path):
    """Crops are built by DataLoader workers from keys the main process draws: same numbers with 0 or 2
    workers, over more than one epoch of the tiny world (4 steps of batch 8)."""
    alone = run_unit(coco, tmp_path / "a", "finetune", max_steps=4)
    workers = run_unit(coco, tmp_path / "b", "finetune", max_steps=4, num_workers=2)
    assert alone.extra["losses"] == workers.extra["losses"] and alone.scores == workers.scores
