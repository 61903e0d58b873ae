"""Whole-body task on the synthetic world through the real reader: 133-point round trip scored per part,
both protocols, official split result keys, re-scoring by the CLI metric."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.cli import main
from saip_bench.data.readers import read_dataset
from saip_bench.metrics.keypoints import WHOLEBODY_PARTS, split_wholebody, wholebody_ap
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from tests.tasks.test_pose import target_results


@pytest.fixture(scope="module")
def wholebody(synth_world):
    return read_dataset("coco_wholebody", synth_world / "coco_wholebody")


def test_meta_from_mmpose_has_133_points_and_symmetric_flips():
    from saip_bench.tasks.dense.topdown import pose_meta

    meta = pose_meta("coco_wholebody")
    assert meta.num_keypoints == 133 and len(meta.flip_indices) == 133
    assert all(meta.flip_indices[meta.flip_indices[i]] == i for i in range(133))
    assert meta.flip_indices[91] == 112  # left hand root <-> right hand root


def test_udp_targets_decode_back_to_ap_one_for_every_part(wholebody):
    results = target_results(wholebody, "coco_wholebody", "udp", lambda i, p: {
        "image_id": i, "category_id": 1, **split_wholebody(p), "score": 1.0})
    scores = wholebody_ap(wholebody.meta["gt_files"]["val"], results)
    # points the crop cuts off (the synthetic world labels some past the image border) cost a little
    for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody"):
        assert scores[f"{part}/AP"] > 0.85, (part, scores[f"{part}/AP"])


@pytest.mark.parametrize("protocol", ["frozen", "finetune"])
def test_end_to_end_both_protocols(wholebody, tmp_path, protocol, capsys):
    spec = get_task_spec("wholebody", "coco_wholebody").model_copy(deep=True)
    schedule = spec.protocols[protocol].schedule
    schedule.max_steps, schedule.batch_size = 2, 8
    spec.protocols[protocol].params.update({"input_size": [64, 48], "sigma": 1.0,
                                            "head": {"deconv_channels": [16, 16],
                                                     "position_bias": protocol == "frozen"}})
    torch.manual_seed(0)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=create_backbone("vit_tiny", (64, 48)),
                      data=wholebody, out_dir=tmp_path, cache_dir=tmp_path / "cache", visualize=1,
                      show_progress=False, amp=False)
    result = get_task("wholebody").run(ctx)
    assert result.main_metric == "wholebody/AP"
    assert {"body/AP", "face/AP", "righthand/AR"} <= set(result.scores)
    # the recipe's MSRA codec; the fast protocol decodes UDP heatmaps (docs/board_signal.md)
    codec = "UDPHeatmap" if protocol == "frozen" else "MSRAHeatmap"
    assert result.extra["codec"] == codec and result.extra["box_source"] == "gt"
    entries = json.loads(result.predictions[0].read_text())
    for _, key, count in WHOLEBODY_PARTS:
        assert all(len(e[key]) == 3 * count for e in entries)
    assert all(np.isfinite(e["keypoints"]).all() and "score" in e for e in entries)
    assert len(list((tmp_path / "vis").glob("*.png"))) == 1
    gt = wholebody.meta["gt_files"]["val"]
    assert main(["metric", "wholebody", "--gt", gt, "--pred", str(result.predictions[0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(result.scores)
