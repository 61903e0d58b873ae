"""Fashionpedia task: targets from the file's polygons/RLE, both protocols end to end through the reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.cli import main
from saip_bench.data.readers import read_dataset
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.detection.fashion_rcnn import FashionHeadParams
from saip_bench.tasks.fashionpedia import FashionModel, decode_segmentation


def test_decode_polygon_and_rle_agree():
    polygon = [[2, 2, 8, 2, 8, 6, 2, 6]]
    mask = decode_segmentation(polygon, 10, 12)
    assert mask.shape == (10, 12) and mask[4, 5] == 1 and mask[0, 0] == 0
    import pycocotools.mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    assert (decode_segmentation(rle, 10, 12) == mask).all()


def test_model_trains_and_detects_with_attributes():
    torch.manual_seed(0)
    params = FashionHeadParams(channels=8, detections_per_img=5, rpn_post_nms_train=50,
                               box_batch_per_image=16)
    model = FashionModel([16], True, [0], (64, 64), num_categories=46, num_attributes=7, params=params)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 10:30] = 1
    target = {"boxes": torch.tensor([[10.0, 10, 30, 40]]), "labels": torch.tensor([1]), "masks": masks,
              "attributes": torch.tensor([[0.0, 1, 0, 0, 0, 0, 1]])}
    model.train()
    loss = model.losses([torch.randn(1, 16, 4, 4)], [target])
    loss.backward()
    assert torch.isfinite(loss) and model.attributes.mlp[-1].weight.grad is not None
    model.eval()
    found = model.detect([torch.randn(1, 16, 4, 4)])[0]
    assert found["attributes"].shape == (len(found["boxes"]), 7)


def run_unit(root: Path, out: Path, protocol: str, visualize: int = 0):
    spec = get_task_spec("fashion", "fashionpedia").model_copy(deep=True)
    spec.protocols[protocol].schedule.max_steps = 2
    spec.protocols[protocol].schedule.batch_size = 2
    spec.protocols[protocol].params["input_size"] = [96, 128]
    spec.protocols[protocol].params.setdefault("head", {}).update(
        {"channels": 16, "detections_per_img": 10, "box_batch_per_image": 32})
    if "keep_ratio" in spec.protocols[protocol].params:  # the recipe's resize rule, at a tiny scale
        spec.protocols[protocol].params["keep_ratio"].update({"train_scale": 128, "test_scale": 128})
        spec.protocols[protocol].params["head"].update(
            {"rpn_post_nms_train": 64, "rpn_pre_nms_test": 100, "rpn_post_nms_test": 50,
             "attributes": {**spec.protocols[protocol].params["head"]["attributes"], "dim": 16, "heads": 2}})
    torch.manual_seed(0)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=create_backbone("vit_tiny", (96, 128)),
                      data=read_dataset("fashionpedia", root), out_dir=out, cache_dir=out / "cache",
                      visualize=visualize, show_progress=False, amp=protocol == "frozen", max_eval_samples=3)
    return get_task("fashion").run(ctx)


@pytest.mark.parametrize("protocol", ["frozen", "finetune"])
def test_end_to_end_on_the_synthetic_world(synth_world, tmp_path, protocol, capsys):
    result = run_unit(synth_world / "fashionpedia", tmp_path, protocol, visualize=1)
    assert result.main_metric == "segm/AP"
    if protocol == "finetune":  # the spec's JPEG draft, in the record (192x256 photos draft for sides <= 128)
        assert result.extra["input_size"]["jpeg_draft"] is True
    assert {"segm/AP", "segm/iou/AP", "bbox/AP", "bbox/iou/AP"} <= set(result.scores)
    segm = json.loads(result.predictions[0].read_text())
    boxes = json.loads(result.predictions[1].read_text())
    assert len(segm) == len(boxes)  # two steps from random init may detect nothing (scores are then 0)
    for entry in segm:
        assert {"image_id", "category_id", "attribute_ids", "segmentation", "score"} <= set(entry)
        assert "bbox" not in entry
    assert all("bbox" in entry and "segmentation" not in entry for entry in boxes)
    assert list((tmp_path / "vis").glob("*.png"))
    # the saved mask results re-score to the same AP through the CLI on the evaluated images' GT
    gt_doc = json.loads((synth_world / "fashionpedia" / "instances_attributes_val2020.json").read_text())
    keep = {r["image_id"] for r in segm}
    gt_doc["images"] = [im for im in gt_doc["images"] if im["id"] in keep]
    gt_doc["annotations"] = [a for a in gt_doc["annotations"] if a["image_id"] in keep]
    if segm:
        gt_path = tmp_path / "gt.json"
        gt_path.write_text(json.dumps(gt_doc))
        capsys.readouterr()
        argv = ["metric", "fashionpedia", "--gt", str(gt_path), "--pred", str(result.predictions[0]),
                "--iou-type", "segm", "--json"]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["segm/AP"] == pytest.approx(result.scores["segm/AP"])
