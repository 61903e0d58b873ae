"""Parsing task: head and flip helpers, both protocols end to end, predictions re-scored by the CLI metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saip_bench.backbones import create_backbone
from saip_bench.cli import main
from saip_bench.data.records import DatasetSplits
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.dense.seg_head import SegmentationHead, flip_labels, flip_logits, swap_permutation

PAIRS = [[14, 15], [16, 17], [18, 19]]


def test_swap_permutation_and_flip_logits_undo_a_mirror():
    assert swap_permutation(20, PAIRS)[14:20] == [15, 14, 17, 16, 19, 18]
    logits = torch.zeros(1, 20, 2, 3)
    logits[0, 14, 0, 0] = 1.0  # "left arm" at the left edge of the mirrored image
    undone = flip_logits(logits, PAIRS)
    assert undone[0, 15, 0, 2] == 1.0 and undone[0, 14].abs().sum() == 0


def test_flip_labels_swaps_classes_and_keeps_ignore():
    labels = torch.tensor([[14, 0, 255], [19, 3, 16]], dtype=torch.uint8)
    flipped = flip_labels(labels, PAIRS)
    assert flipped.tolist() == [[255, 0, 15], [17, 3, 18]]


def test_head_fuses_levels_at_finest_resolution():
    head = SegmentationHead([8, 16], num_classes=5, channels=4)
    out = head([torch.randn(2, 8, 8, 6), torch.randn(2, 16, 4, 3)])
    assert out.shape == (2, 5, 8, 6)


def make_lip_like(root: Path, n_train: int = 12, n_val: int = 4) -> DatasetSplits:
    """Images whose upper half is red (class 5) and lower half blue (class 9), sizes vary; a 255 border."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", n_train), ("val", n_val)):
        records = []
        for index in range(count):
            height, width = int(rng.integers(60, 90)), int(rng.integers(40, 60))
            image = np.zeros((height, width, 3), np.uint8)
            label = np.zeros((height, width), np.uint8)
            top = height // 2 + int(rng.integers(-5, 5))
            image[:top, 10:-10] = (220, 30, 30)
            image[top:, 10:-10] = (30, 30, 220)
            label[:top, 10:-10] = 5
            label[top:, 10:-10] = 9
            label[0, :] = 255
            name = f"{split}_{index:03d}"
            (root / "img").mkdir(parents=True, exist_ok=True)
            (root / "lab").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "img" / f"{name}.jpg")
            Image.fromarray(label, mode="L").save(root / "lab" / f"{name}.png")
            records.append({"id": name, "path": str(root / "img" / f"{name}.jpg"),
                            "label_path": str(root / "lab" / f"{name}.png")})
        splits[split] = records
    return DatasetSplits("lip", "v1", root, splits, meta={})


def run_unit(data: DatasetSplits, out: Path, protocol: str, visualize: int = 0, max_steps: int = 3,
             task: str = "parsing", dataset: str = "lip"):
    spec = get_task_spec(task, dataset).model_copy(deep=True)
    spec.protocols[protocol].schedule.max_steps = max_steps
    spec.protocols[protocol].schedule.batch_size = 4
    spec.protocols[protocol].params["input_size"] = [64, 48]
    spec.protocols[protocol].params.setdefault("head", {})["channels"] = 16
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", (64, 48))
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=backbone, data=data, out_dir=out,
                      cache_dir=out / "cache", visualize=visualize, show_progress=False, amp=False)
    return get_task(task).run(ctx)


@pytest.fixture(scope="module")
def lip_like(tmp_path_factory):
    return make_lip_like(tmp_path_factory.mktemp("lip_like"))


@pytest.mark.parametrize("protocol", ["frozen"])  # finetune: see the synthetic-world test
def test_end_to_end_on_hand_made_data(lip_like, tmp_path, protocol):
    result = run_unit(lip_like, tmp_path / protocol, protocol, visualize=2)
    assert result.main_metric == "mIoU" and 0.0 <= result.main_score <= 1.0
    assert result.n_samples["train"] == {"original": 12, "effective": 12}
    assert len(result.predictions) == 4
    for record, prediction in zip(lip_like.splits["val"], result.predictions, strict=True):
        assert prediction.name == Path(record["label_path"]).name
        with Image.open(prediction) as png, Image.open(record["label_path"]) as gt:
            assert png.mode == "L" and png.size == gt.size
    assert len(list((tmp_path / protocol / "vis").glob("*.png"))) == 2
    if protocol == "frozen":
        assert len(list((tmp_path / protocol / "cache").glob("parsing-*.pt"))) == 1


def test_frozen_training_learns_and_cli_rescores_the_same(lip_like, tmp_path, capsys):
    result = run_unit(lip_like, tmp_path, "frozen", max_steps=40)
    # classes 5 and 9 are colour-coded: a head that learnt anything gets far above chance pixel accuracy
    assert result.scores["pixel_acc"] > 0.6
    assert result.extra["losses"][-1] < result.extra["losses"][0]
    gt_dir = Path(lip_like.splits["val"][0]["label_path"]).parent
    pred_dir = tmp_path / "val_gt"
    pred_dir.mkdir()
    for record in lip_like.splits["val"]:  # the CLI matches every GT in a folder; copy the val GTs
        (pred_dir / Path(record["label_path"]).name).write_bytes(Path(record["label_path"]).read_bytes())
    assert main(["metric", "parsing", "--gt-dir", str(pred_dir), "--pred-dir",
                 str(result.predictions[0].parent), "--num-classes", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mIoU"] == pytest.approx(result.scores["mIoU"])
    assert gt_dir.exists()


def test_same_seed_same_scores(lip_like, tmp_path):
    first = run_unit(lip_like, tmp_path / "a", "finetune", max_steps=1)
    second = run_unit(lip_like, tmp_path / "b", "finetune", max_steps=1)
    assert first.scores == second.scores


@pytest.mark.parametrize("protocol", ["frozen", "finetune"])
def test_end_to_end_on_synthetic_world_through_the_reader(synth_world, tmp_path, protocol):
    from saip_bench.data.readers import read_dataset

    data = read_dataset("lip", synth_world / "lip")
    result = run_unit(data, tmp_path, protocol, visualize=1, max_steps=2)
    assert set(result.scores) >= {"mIoU", "pixel_acc", "mean_acc", "IoU/Left-arm", "IoU/Right-shoe"}
    assert len(result.predictions) == len(data.splits["val"])
    for record, prediction in zip(data.splits["val"], result.predictions, strict=True):
        with Image.open(prediction) as png, Image.open(record["label_path"]) as gt:
            assert png.mode == "L" and png.size == gt.size
        assert prediction.name == Path(record["label_path"]).name
