"""``saip-bench data keypoints``: a pose model kept by a COCO keypoints unit pseudo-labels a pool, HAP
pretrains on the file, an interrupted run resumes to the same bytes, wrong checkpoints are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from saip_bench.cli import main
from saip_bench.pretrain import pseudo_keypoints
from saip_bench.pretrain.keypoint_file import read_keypoints, read_provenance
from saip_bench.pretrain.pseudo_keypoints import label_pool

TINY_HAP = {"view_size": [32, 16], "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}
TINY_TRAIN = {"img_size": [32, 16], "source_size": [32, 16], "batch_size": 4, "checkpoint_every": 100}


@pytest.fixture(autouse=True)
def _fixed_date(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture(scope="module")
def kept_pose(synth_world, tmp_path_factory) -> Path:
    """A pose unit on the synthetic COCO, 1 step, kept with --keep-finetuned (the real writer)."""
    from saip_bench.backbones import create_backbone
    from saip_bench.data.readers import read_dataset
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import UnitContext, get_task

    out = tmp_path_factory.mktemp("pose_unit")
    spec = get_task_spec("pose", "coco").model_copy(deep=True)
    protocol = spec.protocols["frozen"]
    protocol.schedule.max_steps, protocol.schedule.batch_size = 1, 8
    protocol.params.update({"input_size": [64, 48], "sigma": 1.0, "head": {"deconv_channels": [8, 8]}})
    torch.manual_seed(0)
    ctx = UnitContext(spec=spec, protocol="frozen", backbone=create_backbone("vit_tiny", (64, 48)),
                      data=read_dataset("coco", synth_world / "coco"), out_dir=out, show_progress=False,
                      amp=False, bootstrap_resamples=0, keep_finetuned=True, max_eval_samples=2)
    get_task("pose").run(ctx)
    return out


def make_pool(synth_world: Path, where: Path, images: int = 10) -> Path:
    """A raw pool as LUP1M comes: person crops in identity folders, no keypoints.json, no backgrounds."""
    source = sorted((synth_world / "pretrain" / "images").rglob("*.jpg"))[:images]
    for path in source:
        target = where / "images" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return where


def test_kept_pose_sidecar_says_how_to_predict(kept_pose):
    side = json.loads((kept_pose / "finetuned_backbone.json").read_text())
    assert side["task"] == "pose" and side["pose"]["num_keypoints"] == 17
    assert side["pose"]["input_size"] == [64, 48] and side["pose"]["codec"]["type"] == "UDPHeatmap"


def test_labels_the_pool_in_the_format_hap_reads_and_hap_trains_on_it(synth_world, kept_pose, tmp_path):
    from saip_bench.pretrain.api import pretrain
    from saip_bench.pretrain.data import PretrainDataset, PretrainFolder

    pool = make_pool(synth_world, tmp_path / "pool")
    argv = ["data", "keypoints", str(pool), "--checkpoint", str(kept_pose), "--batch-size", "3",
            "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    table, provenance = read_keypoints(pool / "keypoints.json")
    assert len(table) == 10 and all(key.startswith("images/") for key in table)
    assert provenance["checkpoint"]["backbone_sha256"] and provenance["pose"]["spec"] == "pose/coco"
    assert provenance["date"] == "2023-11-14T22:13:20+00:00" and provenance["pool"]["images"] == 10
    assert not (pool / ".saip-index" / "keypoints-partial").exists()  # partial results cleaned up
    folder = PretrainFolder.scan(pool, progress=False)
    dataset = PretrainDataset(folder, source_size=(32, 16), run_seed=0, with_keypoints=True)
    assert dataset._keypoint_array.shape == (10, 17, 3)
    assert (dataset._keypoint_array[..., 2] > 0).any()  # some usable points, found under their keys
    assert main(argv) == 0  # a rerun with the same inputs: up to date, nothing redone
    path = pretrain("hap", "vit_tiny", "quick", pool, tmp_path / "hap", steps=1, progress=False,
                    overrides=TINY_TRAIN, method_overrides=TINY_HAP)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["method"] == "hap" and meta["step"] == 1 and "loss/recon" in meta["final_losses"]


def test_an_interrupted_run_resumes_to_the_identical_file(synth_world, kept_pose, tmp_path, monkeypatch):
    from saip_bench.errors import UserError

    reference = make_pool(synth_world, tmp_path / "a")
    label_pool(reference, kept_pose, batch_size=3, device="cpu", chunk_size=4, progress=False)
    pool = make_pool(synth_world, tmp_path / "b")
    import saip_bench.utils as utils  # the chunk writer is imported where it is used: patch it there

    real_write, written = utils.atomic_write_json, []

    def write_then_die(path, data, indent=2):
        real_write(path, data, indent)
        if Path(path).name.startswith("chunk-"):
            written.append(path)
            if len(written) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(utils, "atomic_write_json", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        label_pool(pool, kept_pose, batch_size=3, device="cpu", chunk_size=4, progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert not (pool / "keypoints.json").exists()
    assert len(list((pool / ".saip-index" / "keypoints-partial").glob("chunk-*.json"))) == 2
    with pytest.raises(UserError, match="settings changed.*'batch_size': 3.*'batch_size': 2.*--restart"):
        label_pool(pool, kept_pose, batch_size=2, device="cpu", chunk_size=4, progress=False)
    label_pool(pool, kept_pose, batch_size=3, device="cpu", chunk_size=4, progress=False)
    assert (pool / "keypoints.json").read_bytes() == (reference / "keypoints.json").read_bytes()


def test_loader_workers_give_the_same_file(synth_world, kept_pose, tmp_path):
    alone, workers = make_pool(synth_world, tmp_path / "a", 6), make_pool(synth_world, tmp_path / "b", 6)
    label_pool(alone, kept_pose, batch_size=4, device="cpu", progress=False)
    label_pool(workers, kept_pose, batch_size=4, workers=2, device="cpu", progress=False)
    assert (alone / "keypoints.json").read_bytes() == (workers / "keypoints.json").read_bytes()


def test_an_unreadable_image_is_skipped_and_counted(synth_world, kept_pose, tmp_path, monkeypatch, capsys):
    import saip_bench.tasks.common as common
    from saip_bench.errors import DataFormatError

    pool = make_pool(synth_world, tmp_path / "pool", images=5)
    bad = sorted((pool / "images").rglob("*.jpg"))[2]
    real_load = common.load_rgb

    def load(path):
        if Path(path) == bad:  # the header was readable when indexed; the pixels are not
            raise DataFormatError(path, "a readable image", "OSError: truncated")
        return real_load(path)

    monkeypatch.setattr(common, "load_rgb", load)
    label_pool(pool, kept_pose, device="cpu", progress=False)
    table, provenance = read_keypoints(pool / "keypoints.json")
    assert len(table) == 4 and provenance["unreadable"] == 1 and provenance["images_labelled"] == 4
    assert bad.name in provenance["unreadable_first"][0] and "1 unreadable skipped" in capsys.readouterr().err


def test_a_kept_model_without_pose_settings_falls_back_to_its_spec_file(synth_world, kept_pose, tmp_path):
    pool, older = make_pool(synth_world, tmp_path / "pool", images=2), tmp_path / "older"
    shutil.copytree(kept_pose, older)
    side = json.loads((older / "finetuned_backbone.json").read_text())
    del side["pose"]  # as --keep-finetuned wrote it before the sidecar recorded the pose settings
    (older / "finetuned_backbone.json").write_text(json.dumps(side))
    argv = ["data", "keypoints", str(pool), "--checkpoint", str(older / "finetuned_backbone.safetensors"),
            "--device", "cpu", "--workers", "0", "--no-progress", "--no-amp"]
    assert main(argv) == 0
    provenance = read_provenance(pool / "keypoints.json")
    assert provenance["pose"]["from"].startswith("tasks/pose/coco.yaml")
    assert provenance["pose"]["input_size"] == [128, 96]  # the spec's frozen protocol, not the unit's 64x48
    assert provenance["settings"]["amp"] is False


def test_partial_results_of_another_checkpoint_or_pool_are_named(synth_world, kept_pose, tmp_path):
    from saip_bench.errors import UserError

    pool = make_pool(synth_world, tmp_path / "pool")
    work = pool / ".saip-index" / "keypoints-partial"
    work.mkdir(parents=True)
    (work / "state.json").write_text(json.dumps({"format": "saip-bench-keypoints/1",
                                                 "pool": {"images": 9, "images_sha256": "abc"}}))
    with pytest.raises(UserError, match=r"the pool changed \(9 images.*10 images.*--restart"):
        label_pool(pool, kept_pose, device="cpu", progress=False)
    label_pool(pool, kept_pose, device="cpu", progress=False, restart=True)
    provenance = read_provenance(pool / "keypoints.json")
    assert provenance is not None and provenance["images_labelled"] == 10


def test_an_existing_keypoints_file_made_otherwise_is_kept_unless_overwrite(synth_world, kept_pose, tmp_path):
    from saip_bench.errors import UserError

    pool = make_pool(synth_world, tmp_path / "pool", images=3)
    ground_truth = json.loads((synth_world / "pretrain" / "keypoints.json").read_text())
    (pool / "keypoints.json").write_text(json.dumps(ground_truth))
    with pytest.raises(UserError, match="no provenance.*--overwrite"):
        label_pool(pool, kept_pose, device="cpu", progress=False)
    assert json.loads((pool / "keypoints.json").read_text()) == ground_truth  # untouched
    label_pool(pool, kept_pose, device="cpu", progress=False, overwrite=True)
    assert read_provenance(pool / "keypoints.json") is not None


def test_wrong_checkpoints_are_clear_errors_naming_file_and_field(synth_world, kept_pose, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    pool = make_pool(synth_world, tmp_path / "pool", images=2)

    def fails(checkpoint: Path, *needles: str) -> None:
        code = main(["data", "keypoints", str(pool), "--checkpoint", str(checkpoint), "--no-progress"])
        message = capsys.readouterr().err
        assert code == 2 and all(n in message for n in needles), message
        assert not (pool / "keypoints.json").exists()

    fails(tmp_path / "nowhere", "nowhere", "--keep-finetuned")
    # a pretraining export: the sidecar's 'source' field
    other = tmp_path / "export"
    shutil.copytree(kept_pose, other)
    side = json.loads((other / "finetuned_backbone.json").read_text())
    (other / "finetuned_backbone.json").write_text(json.dumps({**side, "source": None, "method": "mae"}))
    fails(other, "finetuned_backbone.json", "'source'", "pretraining export")
    # a ReID model: the 'task' field
    (other / "finetuned_backbone.json").write_text(json.dumps({**side, "task": "reid"}))
    fails(other, "finetuned_backbone.json", "'task' = 'reid'", "not a pose model")
    # a whole-body model (133 keypoints): HAP needs COCO-17
    (other / "finetuned_backbone.json").write_text(
        json.dumps({**side, "pose": {**side["pose"], "num_keypoints": 133}}))
    fails(other, "'pose.num_keypoints'", "133")
    (other / "finetuned_backbone.json").write_text(json.dumps({**side, "pose": None}))
    head = load_file(str(other / "finetuned_head.safetensors"))
    for key in ("head.final.weight", "head.final.bias"):  # a 5-keypoint head
        head[key] = head[key][:5].clone()
    save_file(head, str(other / "finetuned_head.safetensors"))
    fails(other, "finetuned_head.safetensors", "'head.final.weight'", "found 5")


def test_the_entry_marks_points_outside_the_image_or_below_the_score_unusable():
    import numpy as np

    points = np.array([[5.0, 5.0], [-1.0, 5.0], [5.0, 40.0]] + [[1.0, 1.0]] * 14)
    scores = np.array([0.9, 0.9, 0.9] + [0.05] * 14)
    entry = pseudo_keypoints.to_entry(points, scores, height=32, width=16, min_score=0.1)
    assert entry[0] == [5.0, 5.0, 0.9] and entry[1][2] == 0.0 and entry[2][2] == 0.0
    assert all(e[2] == 0.0 for e in entry[3:])


def test_chunks_never_share_a_batch():
    assert pseudo_keypoints.chunk_batches([0, 2], 10, 4, 3) == [[0, 1, 2], [3], [8, 9]]
