"""CIHP task: instance parts derived from the semantic map, both protocols end to end through the reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.cli import main
from saip_bench.data.readers import read_dataset
from saip_bench.metrics import cihp as cihp_metric
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.cihp import instances_from_semantic, write_instances


def test_connected_components_become_instance_parts(tmp_path):
    labels = np.zeros((10, 20), dtype=np.uint8)
    labels[1:4, 1:4] = 2  # hair of person A
    labels[1:4, 10:14] = 2  # hair of person B (not touching)
    labels[6:9, 1:4] = 13  # a face
    labels[0, 19] = 5  # a single pixel: dropped (min_pixels)
    instances, listed = instances_from_semantic(labels)
    assert [c for c, _ in listed] == [2, 2, 13]
    assert listed[1][1] == pytest.approx(12 / 200)
    assert set(np.unique(instances)) == {0, 1, 2, 3}
    write_instances(instances, listed, tmp_path / "x.png")
    pred_map, preds = cihp_metric.pred_parts(tmp_path / "x.png")
    assert (pred_map == instances).all() and [p[1] for p in preds] == [2, 2, 13]


def run_unit(root: Path, out: Path, protocol: str, visualize: int = 0):
    spec = get_task_spec("multi_parsing", "cihp").model_copy(deep=True)
    spec.protocols[protocol].schedule.max_steps = 2
    spec.protocols[protocol].schedule.batch_size = 4
    spec.protocols[protocol].params["input_size"] = [64, 80]
    spec.protocols[protocol].params.setdefault("head", {})["channels"] = 16
    if spec.protocols[protocol].params["head"].get("type") == "ce2p":  # the paper head, narrowed for CPU
        spec.protocols[protocol].params["head"].update(context_channels=16, low_channels=8, edge_channels=8)
    torch.manual_seed(0)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=create_backbone("vit_tiny", (64, 80)),
                      data=read_dataset("cihp", root), out_dir=out, cache_dir=out / "cache",
                      visualize=visualize, show_progress=False, amp=False, max_eval_samples=3)
    return get_task("multi_parsing").run(ctx)


@pytest.mark.parametrize("protocol", ["frozen", "finetune"])
def test_end_to_end_on_the_synthetic_world(synth_world, tmp_path, protocol, capsys):
    root = synth_world / "cihp"
    result = run_unit(root, tmp_path, protocol, visualize=1)
    assert result.main_metric == "mIoU" and 0.0 <= result.scores["mIoU"] <= 1.0
    assert "APr50" in result.scores and "APr_vol" in result.scores
    # finetune is the LIP SCHP/CE2P recipe applied to scenes (affine crops, Lovász + CE + edge, 5 scales)
    assert result.extra["parsing_head"] == ("ce2p" if protocol == "finetune" else "multi_level")
    assert len(result.predictions) == 3 and list((tmp_path / "vis").glob("*.png"))
    # re-scored through the CLI from the saved files: same numbers
    capsys.readouterr()
    gt_dir = root / "Validation" / "Category_ids"
    sub = tmp_path / "gt_subset"
    sub.mkdir()
    for prediction in result.predictions:
        (sub / prediction.name).write_bytes((gt_dir / prediction.name).read_bytes())
    argv = ["metric", "cihp", "--gt-categories", str(sub),
            "--pred-semantic", str(result.predictions[0].parent),
            "--gt-instances", str(root / "Validation" / "Instance_ids"), "--pred-instances",
            str(tmp_path / "predictions_instances"), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mIoU"] == pytest.approx(result.scores["mIoU"])
    assert out["APr_vol"] == pytest.approx(result.scores["APr_vol"], nan_ok=True)
