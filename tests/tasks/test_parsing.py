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
from saip_bench.errors import DataFormatError, SpecError
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.dense.seg_head import SegmentationHead, flip_labels, flip_logits, swap_permutation
from saip_bench.tasks.parsing import (
    ParsingModel,
    SegmentationTask,
    flip_averaged_logits,
    load_affine_pair,
    multi_scale_logits,
    parse_test_scales,
)

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
    if spec.protocols[protocol].params["head"].get("type") == "ce2p":  # the paper head, narrowed for CPU
        spec.protocols[protocol].params["head"].update(context_channels=16, low_channels=8, edge_channels=8)
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
    # finetune is the SCHP/CE2P recipe (affine crops, Lovász + CE + edge, 5-scale + flip test)
    assert result.extra["parsing_head"] == ("ce2p" if protocol == "finetune" else "multi_level")
    assert all(np.isfinite(result.extra["losses"]))
    assert set(result.scores) >= {"mIoU", "pixel_acc", "mean_acc", "IoU/Left-arm", "IoU/Right-shoe"}
    assert len(result.predictions) == len(data.splits["val"])
    for record, prediction in zip(data.splits["val"], result.predictions, strict=True):
        with Image.open(prediction) as png, Image.open(record["label_path"]) as gt:
            assert png.mode == "L" and png.size == gt.size
        assert prediction.name == Path(record["label_path"]).name


def small_ce2p_model(size: tuple[int, int] = (64, 48)):
    spec = get_task_spec("parsing", "lip").model_copy(deep=True)
    params = {**spec.head.params, **spec.protocols["finetune"].params["head"], "channels": 16,
              "context_channels": 16, "low_channels": 8, "edge_channels": 8}
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", size).eval()
    head, levels = SegmentationTask._ce2p_head(backbone, spec, "finetune", params, 20)
    return backbone, ParsingModel(head, levels, [str(i) for i in range(20)], PAIRS).eval()


def test_multi_scale_with_scale_one_equals_the_single_scale_path_exactly():
    backbone, model = small_ce2p_model()
    images = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        single = flip_averaged_logits(model, backbone, images, flip=True)
        assert single.shape == (2, 20, 64, 48)  # at the input size, ready for the inverse warp
        assert torch.equal(multi_scale_logits(model, backbone, images, [1.0], flip=True), single)
        recipe = multi_scale_logits(model, backbone, images, [0.5, 0.75, 1.0, 1.25, 1.5], flip=True)
    assert recipe.shape == single.shape and not torch.allclose(recipe, single)


def test_the_paper_protocols_declare_the_recipe_and_the_cpu_protocols_keep_the_light_head():
    for task, dataset in (("parsing", "lip"), ("multi_parsing", "cihp")):
        spec = get_task_spec(task, dataset)
        paper = spec.protocols["finetune"]
        assert paper.params["head"]["type"] == "ce2p" and paper.params["affine"] is True
        assert paper.params["test_scales"] == [0.5, 0.75, 1.0, 1.25, 1.5]
        assert paper.schedule.scheduler == "sgdr" and paper.schedule.batch_size == 96
        assert paper.schedule.cycle_start_epochs == 120 and paper.schedule.cycle_epochs == 10
        allowed = {"self-correction (SCHP)", "parsing-edge consistency loss", "protocol source"}
        assert {d.what for d in paper.recipe.deviations} <= allowed
        for name, protocol in spec.protocols.items():
            if name != "finetune":
                assert "type" not in protocol.params.get("head", {}), name
                assert not protocol.params.get("affine"), name
                assert "test_scales" not in protocol.params and protocol.schedule.scheduler == "cosine", name


def test_bad_test_scales_are_a_spec_error_naming_the_key():
    assert parse_test_scales({}, "x") is None
    with pytest.raises(SpecError, match="parsing/lip protocols.finetune.params.test_scales"):
        parse_test_scales({"test_scales": [1.0, -0.5]}, "parsing/lip protocols.finetune.params")


def test_a_label_map_of_another_size_than_its_image_is_a_clear_error(lip_like, tmp_path):
    record = dict(lip_like.splits["train"][0])
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((5, 7), np.uint8), mode="L").save(small)
    record["label_path"] = str(small)
    with pytest.raises(DataFormatError, match=r"small\.png: expected a label map of its image's size"):
        load_affine_pair(record, (64, 48), 1.0, 0.0, False, PAIRS)
    bad = DatasetSplits("lip", "v1", lip_like.root, {"train": [record] * 4, "val": lip_like.splits["val"]},
                        meta={})
    with pytest.raises(DataFormatError, match="small.png"):  # the paper protocol's training reads it too
        run_unit(bad, tmp_path / "run", "finetune", max_steps=1)
    bad_val = DatasetSplits("lip", "v1", lip_like.root, {"train": lip_like.splits["train"], "val": [record]},
                            meta={})
    with pytest.raises(DataFormatError, match=r"small\.png: expected a label map of its image's size"):
        run_unit(bad_val, tmp_path / "run_val", "frozen", max_steps=1)  # an evaluation label: checked first
    assert not list((tmp_path / "run_val" / "predictions").glob("*.png"))


def test_bad_test_scales_fail_before_training(lip_like, tmp_path, monkeypatch):
    import saip_bench.tasks.parsing as parsing

    def no_training(*_args, **_kwargs):
        raise AssertionError("trained before checking the test settings")

    monkeypatch.setattr(parsing, "fit_unit", no_training)
    spec_params = get_task_spec("parsing", "lip").protocols["finetune"].params
    assert spec_params["test_scales"]  # the paper protocol has scales; break them in a copy
    monkeypatch.setattr(parsing, "protocol_params",
                        lambda spec, protocol: {**spec_params, "test_scales": [1.0, 0]})
    with pytest.raises(SpecError, match="test_scales"):
        run_unit(lip_like, tmp_path, "finetune", max_steps=1)


@pytest.mark.parametrize("protocol", ["finetune", "finetune_cpu", "frozen"])
def test_images_travel_as_uint8_and_give_the_numbers_of_float_images(lip_like, tmp_path, monkeypatch,
                                                                     protocol):
    """Every parsing image (the recipe's affine crops, the plain resizes of training, frozen caching and
    evaluation) crosses the loader or the host as uint8, a quarter of the bytes, and becomes floats on the
    device: losses and scores equal, bit for bit, those of the images made float on the host as before."""
    from saip_bench.tasks import common, parsing

    image, label = load_affine_pair(lip_like.splits["train"][0], (64, 48), 1.1, 10.0, True, PAIRS)
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 48) and label.dtype == torch.uint8
    uint8_run = run_unit(lip_like, tmp_path / "uint8", protocol, max_steps=3)
    as_uint8, warp_uint8, to_float = parsing.load_affine_pair, parsing.warp_image, parsing.unit_float

    def float_crops(*args, **kwargs):
        crop, target = as_uint8(*args, **kwargs)
        return crop.float().div(255.0), target

    monkeypatch.setattr(parsing, "load_affine_pair", float_crops)
    monkeypatch.setattr(parsing, "pil_to_uint8", common.pil_to_tensor)  # plain resizes, as floats
    monkeypatch.setattr(parsing, "warp_image", lambda *a: warp_uint8(*a).astype(np.float32) / np.float32(255))
    floats_seen = []

    def already_float(images):
        floats_seen.append(images.is_floating_point())
        return images if images.is_floating_point() else to_float(images)

    monkeypatch.setattr(parsing, "unit_float", already_float)
    float_run = run_unit(lip_like, tmp_path / "float", protocol, max_steps=3)
    assert floats_seen and all(floats_seen)  # the comparison run made every image float on the host
    assert len(uint8_run.extra["losses"]) == 3
    assert uint8_run.extra["losses"] == float_run.extra["losses"]
    assert uint8_run.scores == float_run.scores
