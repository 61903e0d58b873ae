"""The fine-tune path that renders heatmap targets on the device against the one that ran mmpose's
GenerateTarget in the loader: the same crops sample by sample, and the same losses and scores of a
pose and a whole-body unit on the tiny synthetic world."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saip_bench.devices import unit_float
from saip_bench.tasks.dense import pose_task
from saip_bench.tasks.dense.heatmap_targets import render_heatmaps
from saip_bench.tasks.dense.pose_task import PoseModel, TopDownPoseTask, _image_array
from saip_bench.tasks.dense.topdown import TopDownPipeline, codec_config, gt_instances, pose_meta
from tests.tasks.dense.pose_cases import CASES, finetune


@pytest.mark.parametrize("task", list(CASES))
def test_compact_samples_render_to_the_generate_target_samples(worlds, task):
    """Augmented crops (flip, half body, scale/rotation/shift) drawn from the same seeds: the uint8 crop
    is the float crop x 255, the rendered targets are mmpose's (the recipe's 64x48, sigma 2)."""
    _, layout, kind = CASES[task]
    meta = pose_meta(layout)
    codec = codec_config(kind, (256, 192), 2.0)
    old = TopDownPipeline(meta, (256, 192), codec, train=True, augment=True)
    new = TopDownPipeline(meta, (256, 192), codec, train=True, augment=True, compact=True)
    instances = gt_instances(worlds[task].splits["train"], meta.num_keypoints, train=True)[:12]
    seeds = [1_000_003 + i for i in range(len(instances))]
    before = [old(inst, _image_array(inst["path"]), seed=s) for inst, s in zip(instances, seeds, strict=True)]
    after = [new(inst, _image_array(inst["path"]), seed=s) for inst, s in zip(instances, seeds, strict=True)]
    assert all(a["image"].dtype == torch.uint8 and "heatmaps" not in a for a in after)
    images = unit_float(torch.stack([a["image"] for a in after]))
    assert torch.equal(images, torch.stack([b["image"] for b in before]))
    heatmaps, weights = render_heatmaps(torch.stack([a["points"] for a in after]),
                                        torch.stack([a["visible"] for a in after]), codec)
    assert torch.equal(weights, torch.stack([b["weights"] for b in before]))
    assert (weights == 0).any() and (weights == 1).any()  # some points cut off or unlabelled, some kept
    torch.testing.assert_close(heatmaps, torch.stack([b["heatmaps"] for b in before]), rtol=0, atol=1e-6)
    for a, b in zip(after, before, strict=True):
        assert np.array_equal(a["center"], b["center"]) and np.array_equal(a["scale"], b["scale"])



@pytest.mark.parametrize(("task", "num_workers"), [("pose", 2), ("wholebody", 0)])
def test_device_targets_give_the_losses_of_generate_target(worlds, task, num_workers, tmp_path, monkeypatch):
    """The reference runs mmpose's encoder in the loader (``device_targets = False``); the backbone sees
    the same images, the losses agree to float32 rounding (the targets differ by ~1e-7), the scores
    exactly."""
    calls = []
    seen: dict[str, list[torch.Tensor]] = {"new": [], "reference": []}
    feature = PoseModel.feature

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return render_heatmaps(*args, **kwargs)

    def recorded(run: str):
        def record(self, backbone, images):
            seen[run].append(images.detach().clone())
            return feature(self, backbone, images)
        return record

    monkeypatch.setattr(pose_task, "render_heatmaps", counted)
    monkeypatch.setattr(PoseModel, "feature", recorded("new"))
    new = finetune(worlds[task], task, tmp_path / "new", num_workers)
    assert len(calls) == 4 and calls[0][0] == 8  # every step's targets were rendered from keypoints
    monkeypatch.setattr(TopDownPoseTask, "device_targets", False)
    monkeypatch.setattr(PoseModel, "feature", recorded("reference"))
    reference = finetune(worlds[task], task, tmp_path / "reference")
    assert len(calls) == 4
    # the 4 training batches, then the prediction crops (and their mirrors)
    assert len(seen["new"]) == len(seen["reference"]) > 4
    assert all(torch.equal(a, b) for a, b in zip(seen["new"], seen["reference"], strict=True))
    assert new.extra["losses"][0] == pytest.approx(reference.extra["losses"][0], rel=1e-6, abs=0)
    assert new.extra["losses"] == pytest.approx(reference.extra["losses"], rel=1e-5, abs=0)
    assert new.scores == reference.scores
