"""Random init: the trainer leaves the seeded backbone untouched; the same seed gives the same weights."""

from __future__ import annotations

import torch

from .conftest import build_method, train_losses


def test_training_leaves_the_backbone_at_its_seeded_init(people_root, tmp_path) -> None:
    fresh = build_method("random", img_size=(64, 32))
    losses, method = train_losses("random", people_root, tmp_path, steps=2, batch_size=2, img_size=(64, 32))
    assert losses == [0.0, 0.0]
    trained = method.export_backbone().export_state_dict()
    for key, value in fresh.backbone.export_state_dict().items():
        torch.testing.assert_close(trained[key], value, rtol=0, atol=0)
    assert [name for name, _ in method.trainable_parameters()] == ["placeholder"]


def test_seed_decides_the_weights() -> None:
    a = build_method("random").backbone.export_state_dict()
    b = build_method("random").backbone.export_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_presets_run_a_single_step() -> None:
    from saip_bench.pretrain.trainer import load_preset

    for preset in ("quick", "paper"):
        train, _ = load_preset("random", preset)
        assert train.steps == 1 and train.epochs is None


def test_cli_exports_the_seeded_init(people_root, tmp_path) -> None:
    from saip_bench.cli import main
    from saip_bench.pretrain.export import load_backbone, read_sidecar

    out = tmp_path / "run"
    args = ["pretrain", "--method", "random", "--backbone", "vit_tiny", "--preset", "quick",
            "--data", str(people_root), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    sidecar = read_sidecar(out / "backbone.safetensors")
    assert sidecar["method"] == "random" and sidecar["step"] == 1
    exported = load_backbone(out / "backbone.safetensors").export_state_dict()
    fresh = build_method("random").backbone.export_state_dict()  # the CLI seeds with --seed 0 as well
    assert all(torch.equal(exported[k], fresh[k]) for k in fresh)
