"""Supervised: classes from identity folders, cross-entropy by hand, training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from saip_bench.errors import DataFormatError, SpecError
from saip_bench.pretrain.methods._common import batch_rngs, crop_views
from saip_bench.pretrain.methods.supervised import Supervised
from saip_bench.pretrain.views import normalize

from .conftest import build_method, decreased, fake_batch, train_losses


def test_classes_come_from_the_identity_folders(people_root, tmp_path) -> None:
    assert Supervised.prepare_config({}, people_root)["num_classes"] == 4
    assert Supervised.prepare_config({"num_classes": 9}, people_root)["num_classes"] == 9
    flat = tmp_path / "flat" / "images"
    flat.mkdir(parents=True)
    (flat / "a.jpg").write_bytes((next(people_root.glob("images/*/*.jpg"))).read_bytes())
    with pytest.raises(DataFormatError, match="identity sub-folders"):
        Supervised.prepare_config({}, tmp_path / "flat")


def test_missing_num_classes_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="num_classes"):
        build_method("supervised_ids")


def test_uniform_logits_give_log_classes() -> None:
    method = build_method("supervised_ids", num_classes=5)
    with torch.no_grad():
        method.classifier.weight.zero_()
        method.classifier.bias.zero_()
    out = method(method.make_views(fake_batch(4), torch.Generator().manual_seed(0)))
    # uniform prediction: cross-entropy log(5) whatever the label smoothing
    assert float(out["loss"].detach()) == pytest.approx(math.log(5), rel=1e-5)


def test_colour_override_switches_the_photometric_ops_off() -> None:
    """With jitter and grayscale off the view is the crop itself: the colour-ablation switch really acts."""
    batch = fake_batch(4)
    plain = build_method("supervised_ids", num_classes=2, crop_scale=[1.0, 1.0], crop_ratio=[0.5, 0.5],
                         colour={"jitter_p": 0.0, "grayscale_p": 0.0})
    jittered = build_method("supervised_ids", num_classes=2, crop_scale=[1.0, 1.0], crop_ratio=[0.5, 0.5],
                            colour={"jitter_p": 1.0, "grayscale_p": 0.0})
    views = {name: method.make_views(batch, torch.Generator().manual_seed(0))["image"]
             for name, method in (("plain", plain), ("jittered", jittered))}
    rngs = batch_rngs(batch, torch.Generator().manual_seed(0))
    crops = crop_views(batch["image"], rngs, plain.view_size, [1.0, 1.0], [0.5, 0.5])
    assert torch.equal(views["plain"], normalize(crops))
    assert not torch.allclose(views["plain"], views["jittered"])
    assert plain.hyperparameters()["colour"] == {"jitter_p": 0.0, "grayscale_p": 0.0}


def test_unknown_colour_field_is_refused() -> None:
    with pytest.raises(SpecError, match="unknown colour field"):
        build_method("supervised_ids", num_classes=2, colour={"hue_p": 0.5})


def test_out_of_range_labels_are_refused() -> None:
    method = build_method("supervised_ids", num_classes=2)
    batch = fake_batch(2)
    batch["label"] = torch.tensor([0, 3])
    with pytest.raises(SpecError, match="num_classes"):
        method(method.make_views(batch, torch.Generator()))


@pytest.mark.parametrize("backbone", ["tinyvit_5m", "starnet_s3"])
def test_hybrid_and_convnet_backbones(backbone: str) -> None:
    method = build_method("supervised_ids", backbone_name=backbone, num_classes=3)
    out = method(method.make_views(fake_batch(2), torch.Generator().manual_seed(0)))
    out["loss"].backward()
    assert math.isfinite(float(out["loss"].detach()))


def test_few_steps_through_the_trainer_reduce_the_loss(people_root, tmp_path) -> None:
    losses, method = train_losses(
        "supervised_ids", people_root, tmp_path, steps=10, batch_size=8, img_size=(64, 32), lr=1e-3
    )
    assert decreased(losses), losses
    assert method.hyperparameters()["num_classes"] == 4


def test_cli_supervised_reads_the_classes_from_the_folder(people_root, tmp_path) -> None:
    from saip_bench.cli import main

    args = ["pretrain", "--method", "supervised_ids", "--backbone", "vit_tiny", "--data", str(people_root),
            "--out", str(tmp_path), "--steps", "1", "--no-progress",
            "--method-set", 'colour={"jitter_p": 0, "grayscale_p": 0}', "--set", "lr=2e-4"]
    assert main(args) == 0
    sidecar = json.loads((tmp_path / "backbone.json").read_text())
    assert sidecar["hyperparameters"]["colour"] == {"jitter_p": 0, "grayscale_p": 0}
    assert sidecar["train_config"]["lr"] == 2e-4
