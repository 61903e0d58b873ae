"""MAE: masking bookkeeping, loss on masked patches only, ViT-only refusal, few-step training."""

from __future__ import annotations

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.errors import UserError
from saip_bench.pretrain.components.mae_decoder import patchify
from saip_bench.pretrain.methods.mae import MAE

from .conftest import build_method, decreased, fake_batch, train_losses


def test_mask_ratio_keeps_a_quarter_of_the_patches() -> None:
    method = build_method("mae")  # quick: 128x64 views -> 8x4 = 32 patches
    views = method.make_views(fake_batch(3), torch.Generator().manual_seed(0))
    ids_keep, ids_restore, mask = views["masking"]
    assert views["image"].shape == (3, 3, 128, 64)
    assert ids_keep.shape == (3, 8) and ids_restore.shape == (3, 32)
    assert mask.sum(dim=1).tolist() == [24.0, 24.0, 24.0]
    # the kept patches are exactly the unmasked ones
    for row in range(3):
        assert set(ids_keep[row].tolist()) == set(torch.nonzero(mask[row] == 0).flatten().tolist())


def test_same_sample_seed_gives_same_views_whatever_the_batch() -> None:
    method = build_method("mae")
    batch = fake_batch(4)
    full = method.make_views(batch, torch.Generator().manual_seed(0))
    half = method.make_views({k: v[2:] for k, v in batch.items()}, torch.Generator().manual_seed(9))
    torch.testing.assert_close(full["image"][2:], half["image"])
    torch.testing.assert_close(full["masking"][2][2:], half["masking"][2])


def test_perfect_prediction_of_masked_patches_gives_zero_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    method = build_method("mae")
    views = method.make_views(fake_batch(2), torch.Generator().manual_seed(0))
    target = patchify(views["image"], 16)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    mask = views["masking"][2].unsqueeze(-1)
    # exact on removed patches, garbage on visible ones: only removed patches count
    prediction = target * mask + 100.0 * (1 - mask)
    monkeypatch.setattr(method.decoder, "forward", lambda *args, **kwargs: prediction)
    out = method(views)
    assert float(out["loss"].detach()) == pytest.approx(0.0, abs=1e-5)
    prediction_wrong = target * (1 - mask) + (target + 1.0) * mask  # off by 1 everywhere masked
    monkeypatch.setattr(method.decoder, "forward", lambda *args, **kwargs: prediction_wrong)
    assert float(method(views)["loss"].detach()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("backbone", ["tinyvit_5m", "starnet_s3"])
def test_non_vit_backbones_are_refused_with_a_reason(backbone: str) -> None:
    model = create_backbone(backbone, img_size=(128, 64))
    reason = MAE.unsupported_reason(model, {})
    assert reason is not None and "vit" in reason and backbone in reason
    with pytest.raises(UserError, match="supports backbone families"):
        MAE(model, {})


def test_paper_preset_is_the_mae_recipe() -> None:
    from saip_bench.pretrain.trainer import load_preset

    train, config = load_preset("mae", "paper")
    assert config["mask_ratio"] == 0.75 and config["norm_pix"] is True
    assert (config["decoder_dim"], config["decoder_depth"], config["decoder_heads"]) == (512, 8, 16)
    assert train.blr == pytest.approx(1.5e-4)


def test_few_steps_through_the_trainer_reduce_the_loss(people_root, tmp_path) -> None:
    losses, method = train_losses("mae", people_root, tmp_path, steps=8, batch_size=8)
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert decreased(losses), losses
    assert method.hyperparameters()["mask_ratio"] == 0.75


def test_cli_refuses_a_convnet_with_a_clear_message(people_root, tmp_path, capsys) -> None:
    from saip_bench.cli import main

    args = ["pretrain", "--method", "mae", "--backbone", "starnet_s3", "--data", str(people_root),
            "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 2
    assert "does not support backbone 'starnet_s3' (family convnet); supported families: vit" in (
        capsys.readouterr().err
    )
