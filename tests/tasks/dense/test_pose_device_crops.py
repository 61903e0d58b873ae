"""Pose / whole-body fine-tune batches whose crops are decoded and warped on the device
(``params.crops_on_device``) against the loader workers' cv2 crops: the same geometry, keypoints and
random draws, pixels within cv2's fixed-point rounding, the same losses to that rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saip_bench.errors import DataFormatError, UserError
from saip_bench.specs import get_task_spec
from saip_bench.tasks.dense import pose_task
from saip_bench.tasks.dense.device_crops import decode_images, read_bytes, warp_crops
from saip_bench.tasks.dense.pose_task import PoseModel, TopDownPoseTask, _image_array, _photo_header
from saip_bench.tasks.dense.topdown import TopDownPipeline, codec_config, gt_instances, pose_meta
from tests.tasks.dense.pose_cases import CASES, finetune


@pytest.mark.parametrize("task", list(CASES))
def test_samples_without_pixels_carry_the_pixel_path_geometry(worlds, task):
    """Augmented samples from the same seeds: keypoints, visibility, centre and scale bit for bit; the
    device's crop of the decoded photo within one grey level of cv2's."""
    _, layout, kind = CASES[task]
    meta = pose_meta(layout)
    codec = codec_config(kind, (256, 192), 2.0)
    pipeline = TopDownPipeline(meta, (256, 192), codec, train=True, augment=True, compact=True)
    instances = gt_instances(worlds[task].splits["train"], meta.num_keypoints, train=True)[:16]
    flips = []
    for n, inst in enumerate(instances):
        seed = 1_000_003 + n
        pixels = pipeline(inst, _image_array(inst["path"]), seed=seed)
        blob = read_bytes(inst["path"])
        geometry = pipeline(inst, None, seed=seed, image_hw=_photo_header(inst["path"], blob))
        assert "image" not in geometry
        for key in ("points", "visible"):
            assert torch.equal(geometry[key], pixels[key])
        for key in ("center", "scale"):
            assert np.array_equal(geometry[key], pixels[key])
        (photo,) = decode_images([blob], [inst["path"]], "cpu")
        crop = warp_crops([photo], geometry["matrix"][None], geometry["flip"][None], (256, 192))[0]
        difference = (crop.int() - pixels["image"].int()).abs()
        assert int(difference.max()) <= 1 and float(difference.float().mean()) < 0.05
        flips.append(bool(geometry["flip"]))
    assert any(flips) and not all(flips)  # both the mirrored and the plain warp were compared


def test_a_sample_without_pixels_needs_compact_mode_and_a_size(worlds):
    meta = pose_meta("coco")
    instance = gt_instances(worlds["pose"].splits["train"], meta.num_keypoints, train=True)[0]
    codec = codec_config("udp", (64, 48), 1.0)
    with pytest.raises(ValueError, match="compact"):
        TopDownPipeline(meta, (64, 48), codec, train=True, augment=False)(instance, None, image_hw=(10, 10))
    with pytest.raises(ValueError, match="image_hw"):
        TopDownPipeline(meta, (64, 48), codec, train=True, augment=False, compact=True)(instance, None)


def test_auto_means_a_cuda_device_and_a_bad_value_names_the_field():
    assert pose_task.resolve_crops_on_device("auto", "cuda:0") is True
    assert pose_task.resolve_crops_on_device("auto", "cpu") is False
    assert pose_task.resolve_crops_on_device(True, "cpu") is True
    assert pose_task.resolve_crops_on_device(False, "cuda") is False
    spec = get_task_spec("pose", "coco").model_copy(deep=True)
    assert TopDownPoseTask.settings(spec, "finetune")["crops_on_device"] == "auto"
    spec.protocols["finetune"].params["crops_on_device"] = "yes"
    with pytest.raises(UserError, match=r"tasks/pose/coco.yaml, protocol 'finetune': params.crops_on_device"):
        TopDownPoseTask.settings(spec, "finetune")


def test_an_unreadable_photo_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataFormatError, match="broken.jpg"):
        _photo_header(str(bad), read_bytes(bad))



@pytest.mark.parametrize(("task", "num_workers"), [("pose", 2), ("wholebody", 0)])
def test_device_crops_train_like_the_worker_crops(worlds, task, num_workers, tmp_path, monkeypatch):
    seen: dict[str, list[torch.Tensor]] = {"device": [], "workers": []}
    feature = PoseModel.feature

    def recorded(run: str):
        def record(self, backbone, images):
            seen[run].append(images.detach().clone())
            return feature(self, backbone, images)
        return record

    monkeypatch.setattr(PoseModel, "feature", recorded("device"))
    on_device = finetune(worlds[task], task, tmp_path / "device", num_workers, crops_on_device=True)
    monkeypatch.setattr(PoseModel, "feature", recorded("workers"))
    in_workers = finetune(worlds[task], task, tmp_path / "workers", 0, crops_on_device=False)
    assert on_device.extra["crops_made_on"] == "device"
    assert in_workers.extra["crops_made_on"] == "loader workers"
    # training batches hold 8 crops; the per-epoch evaluation (best_test) predicts the 18 eval people
    train = {run: [x for x in images if x.shape[0] == 8] for run, images in seen.items()}
    evaluation = {run: [x for x in images if x.shape[0] != 8] for run, images in seen.items()}
    assert len(train["device"]) == len(train["workers"]) == 4
    for a, b in zip(train["device"], train["workers"], strict=True):
        assert float((a - b).abs().max()) <= 1 / 255 + 1e-6  # cv2's 1/32-pixel rounding, nothing more
        assert float((a - b).abs().mean()) < 0.05 / 255
    assert on_device.extra["losses"] == pytest.approx(in_workers.extra["losses"], rel=2e-3)
    # prediction crops are made the same way in both runs
    assert len(evaluation["device"]) == len(evaluation["workers"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(evaluation["device"], evaluation["workers"], strict=True))
