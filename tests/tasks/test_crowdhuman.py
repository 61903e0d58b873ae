"""CrowdHuman task: ignore-aware RetinaNet loss, both protocols end to end through the reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.cli import main
from saip_bench.data.readers import read_dataset
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.crowdhuman import CrowdDetector, anchor_ioa


def test_anchor_ioa():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    regions = torch.tensor([[5.0, 0, 15, 10]])
    assert anchor_ioa(anchors, regions).tolist() == [0.5, 0.0]


def test_ignore_regions_leave_the_classification_loss():
    torch.manual_seed(0)
    detector = CrowdDetector([16], True, [0], (64, 64), channels=8)
    maps = [torch.randn(1, 16, 4, 4)]
    person = {"boxes": torch.tensor([[4.0, 4, 20, 40]]), "labels": torch.tensor([1])}
    plain = dict(person, ignore=torch.zeros(0, 4))
    ignoring = dict(person, ignore=torch.tensor([[30.0, 0, 64, 64]]))
    _, outputs, anchors = detector._head(maps)
    full = detector.retina.compute_loss([plain], outputs, anchors)["classification"]
    masked = detector.retina.compute_loss([ignoring], outputs, anchors)["classification"]
    assert masked < full  # fewer negatives contribute (focal loss sum / #foreground)


def run_unit(root: Path, out: Path, protocol: str, visualize: int = 0):
    spec = get_task_spec("detection", "crowdhuman").model_copy(deep=True)
    spec.protocols[protocol].schedule.max_steps = 2
    spec.protocols[protocol].schedule.batch_size = 2
    spec.protocols[protocol].params["input_size"] = [96, 128]
    spec.protocols[protocol].params.setdefault("head", {})["channels"] = 16
    torch.manual_seed(0)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=create_backbone("vit_tiny", (96, 128)),
                      data=read_dataset("crowdhuman", root), out_dir=out, cache_dir=out / "cache",
                      visualize=visualize, show_progress=False, amp=protocol == "frozen", max_eval_samples=3)
    return get_task("detection").run(ctx), ctx


@pytest.mark.parametrize("protocol", ["frozen", "finetune"])
def test_end_to_end_on_the_synthetic_world(synth_world, tmp_path, protocol, capsys):
    result, _ = run_unit(synth_world / "crowdhuman", tmp_path, protocol, visualize=1)
    assert set(result.scores) >= {"AP", "MR", "JI"}
    assert 0.0 <= result.scores["AP"] <= 1.0 and 0.0 <= result.scores["JI"] <= 1.0
    assert result.n_samples["eval"]["effective"] == 3
    lines = [json.loads(x) for x in result.predictions[0].read_text().splitlines()]
    assert len(lines) == 3 and all({"ID", "height", "width", "dtboxes"} <= set(x) for x in lines)
    assert (tmp_path / "vis").is_dir() and list((tmp_path / "vis").glob("*.png"))
    if protocol == "frozen":
        assert list((tmp_path / "cache").glob("detection-*.pt"))
    # the saved predictions re-score to the same numbers through the CLI (GT = the official file, 3 images)
    gt = tmp_path / "gt.odgt"
    ids = {x["ID"] for x in lines}
    gt_lines = [x for x in (synth_world / "crowdhuman" / "annotation_val.odgt").read_text().splitlines()
                if x.strip() and json.loads(x)["ID"] in ids]
    gt.write_text("\n".join(gt_lines) + "\n")
    capsys.readouterr()
    argv = ["metric", "crowdhuman", "--gt", str(gt), "--pred", str(result.predictions[0]), "--json"]
    assert main(argv) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["AP"] == pytest.approx(result.scores["AP"])
