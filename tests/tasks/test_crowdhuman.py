"""CrowdHuman task: ignore-aware RetinaNet loss, the aspect-kept resize of CrowdDet, bad boxes, the detector
per protocol, both protocols end to end through the reader."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.cli import main
from saip_bench.data.readers import read_dataset
from saip_bench.errors import SpecError
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.crowdhuman import (
    CrowdDetector,
    anchor_ioa,
    crowd_boxes,
    flip_own_width,
    load_keep_ratio,
    report_bad_boxes,
)
from saip_bench.tasks.detection.crowddet import CrowdDet
from saip_bench.tasks.detection.pyramid import scale_boxes
from saip_bench.tasks.detection.resize import ShortSideResize


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


def run_unit(root: Path, out: Path, protocol: str, visualize: int = 0, detector: str | None = None):
    spec = get_task_spec("detection", "crowdhuman").model_copy(deep=True)
    if detector is not None:
        spec.protocols[protocol].params.setdefault("head", {})["detector"] = detector
    spec.protocols[protocol].schedule.max_steps = 2
    spec.protocols[protocol].schedule.batch_size = 2
    spec.protocols[protocol].params["input_size"] = [96, 128]
    spec.protocols[protocol].params.setdefault("head", {}).update(
        {"channels": 16, "representation": 64, "rpn": {"pre_nms": [300, 200], "post_nms": [200, 100]},
         "rois_per_image": 64})
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


def test_boxes_round_trip_through_the_keep_ratio_resize(synth_world):
    record = read_dataset("crowdhuman", synth_world / "crowdhuman").splits["train"][0]
    resize = ShortSideResize(96, 128, 32)
    image, target = load_keep_ratio(record, resize)
    h, w = target["image_size"].tolist()
    assert image.dtype == torch.uint8  # made float on the device
    assert tuple(image.shape[1:]) == (h, w) and max(h, w) <= 128 and (min(h, w) == 96 or max(h, w) == 128)
    original = (record["height"], record["width"])
    assert abs(h / original[0] - w / original[1]) < 0.01  # aspect kept
    persons = [b["fbox"] for b in record["boxes"] if not b["ignore"]]
    expected = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in persons])
    expected[:, 0::2] = expected[:, 0::2].clamp(0, original[1])
    expected[:, 1::2] = expected[:, 1::2].clamp(0, original[0])
    back = scale_boxes(target["boxes"], (h, w), original)
    # every person of at least 1 px after the resize comes back where it was
    assert len(back) >= 1 and all(torch.isclose(expected, row, atol=1e-3).all(1).any() for row in back)
    mirrored = flip_own_width(target, 0)
    assert torch.allclose(mirrored["boxes"][:, [2, 0]], w - target["boxes"][:, [0, 2]])


def test_bad_boxes_are_reported_with_the_image_id_and_skipped(caplog):
    record = {"id": "283554,abc", "boxes": [
        {"fbox": [10.0, 10, 20, 40], "tag": "person", "ignore": False},
        {"fbox": [5.0, 5, 0, 30], "tag": "person", "ignore": False},     # zero width: skipped
        {"fbox": [5.0, 5, 10, -3], "tag": "mask", "ignore": True},        # negative height: skipped
        {"fbox": [50.0, 5, 10, 30], "tag": "statue", "ignore": True},     # unknown tag: an ignore region
    ]}
    persons, ignores, problems = crowd_boxes(record)
    assert persons == [[10.0, 10, 20, 40]] and ignores == [[50.0, 5, 10, 30]]
    assert len(problems) == 3 and all("'283554,abc'" in line for line in problems)
    assert "gtboxes[1]" in problems[0] and "non-positive" in problems[0] and "'statue'" in problems[2]
    with caplog.at_level(logging.WARNING, logger="saip_bench.tasks.crowdhuman"):
        assert report_bad_boxes([record], "train") == problems
    assert "3 box problem(s)" in caplog.text and "283554,abc" in caplog.text


def test_each_protocol_builds_its_detector_and_a_bad_name_is_refused(synth_world):
    spec = get_task_spec("detection", "crowdhuman").model_copy(deep=True)
    backbone = create_backbone("vit_tiny", (64, 64))
    task = get_task("detection")
    data = read_dataset("crowdhuman", synth_world / "crowdhuman")
    task._protocol = "finetune"
    head = task.build_head(backbone, spec, data)
    assert isinstance(head, CrowdDet) and head.detections_per_img == 500 and head.nms_thresh == 0.5
    assert head.rpn._pre_nms_top_n == {"training": 2400, "testing": 1200}
    assert head.rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    task._protocol = "frozen"
    assert isinstance(task.build_head(backbone, spec, data), CrowdDetector)
    spec.protocols["frozen"].params["head"]["detector"] = "yolo"
    with pytest.raises(SpecError, match="head.detector: expected one of"):
        task.build_head(backbone, spec, data)


def test_a_frozen_crowddet_unit_caches_padded_aspect_kept_maps(synth_world, tmp_path):
    """The frozen protocol may run CrowdDet too (the spec keeps RetinaNet there for speed): one canvas for
    the cache, each image's own size for its boxes, detections inside the original images."""
    result, _ = run_unit(synth_world / "crowdhuman", tmp_path, "frozen", detector="crowddet")
    assert 0.0 <= result.scores["AP"] <= 1.0 and result.extra["input_size"] == [96, 128]
    caches = list((tmp_path / "cache").glob("detection-*.pt"))
    assert len(caches) == 1
    maps = torch.load(caches[0])["level0"]
    assert tuple(maps.shape[-2:]) == (128 // 16, 128 // 16)  # 96x128 images padded to the 64-multiple canvas
    for line in (json.loads(x) for x in result.predictions[0].read_text().splitlines()):
        for det in line["dtboxes"]:
            x, y, w, h = det["box"]
            assert -0.01 <= x and x + w <= line["width"] + 0.01 and y + h <= line["height"] + 0.01
