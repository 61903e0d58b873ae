"""MoCo v3: InfoNCE by hand, momentum encoder, every family, training."""

from __future__ import annotations

import math

import pytest
import torch

from saip_bench.pretrain.components.ema import cosine_momentum
from saip_bench.pretrain.methods._common import info_nce

from .conftest import build_method, decreased, fake_batch, train_losses


def test_info_nce_by_hand() -> None:
    temperature, batch = 0.2, 3
    q = torch.eye(batch, 5) * 7.0  # normalised inside
    positive = math.exp(1 / temperature)
    expected = -math.log(positive / (positive + batch - 1)) * 2 * temperature
    assert float(info_nce(q, q, temperature)) == pytest.approx(expected, rel=1e-6)
    # keys equal to the queries of *other* samples: positives score 0, one negative scores 1/T
    wrong = info_nce(q, q.roll(1, 0), temperature)
    expected_wrong = -math.log(1 / (math.exp(1 / temperature) + batch - 1)) * 2 * temperature
    assert float(wrong) == pytest.approx(expected_wrong, rel=1e-6)


def test_heads_and_momentum_encoder() -> None:
    method = build_method("mocov3")
    assert method.projector[-1].affine is False  # MoCo v3: last BN without affine
    views = method.make_views(fake_batch(4), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views["views"]] == [(4, 3, 128, 64)] * 2
    out = method(views)
    out["loss"].backward()
    assert method.predictor[0].weight.grad is not None
    assert all(p.grad is None for p in method.momentum_encoder.parameters())
    assert not method.momentum_encoder.module.training  # back in eval mode after the key pass
    before = method.momentum_encoder.module.projector[0].weight.clone()
    with torch.no_grad():
        method.projector[0].weight.add_(1.0)
    method.on_after_step(2, 10)
    m = cosine_momentum(2, 10, 0.99)
    torch.testing.assert_close(
        method.momentum_encoder.module.projector[0].weight, m * before + (1 - m) * method.projector[0].weight
    )


def test_keys_are_batch_normalised() -> None:
    """The key projector's last BN (no affine) uses batch statistics: keys have zero mean per dim."""
    method = build_method("mocov3")
    views = method.make_views(fake_batch(6), torch.Generator().manual_seed(0))
    captured = []
    handle = method.momentum_encoder.module.projector.register_forward_hook(
        lambda module, inputs, output: captured.append(output)
    )
    method(views)
    handle.remove()
    assert len(captured) == 2
    torch.testing.assert_close(captured[0].mean(dim=0), torch.zeros(captured[0].shape[1]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("backbone", ["tinyvit_5m", "starnet_s3"])
def test_hybrid_and_convnet_backbones(backbone: str) -> None:
    method = build_method("mocov3", backbone_name=backbone)
    out = method(method.make_views(fake_batch(4), torch.Generator().manual_seed(0)))
    out["loss"].backward()
    assert math.isfinite(float(out["loss"].detach()))


def test_paper_preset() -> None:
    from saip_bench.pretrain.trainer import load_preset

    _, config = load_preset("mocov3", "paper")
    assert config["temperature"] == 0.2 and config["momentum_base"] == 0.99
    assert (config["hidden_dim"], config["out_dim"]) == (4096, 256)


def test_few_steps_through_the_trainer_reduce_the_loss(people_root, tmp_path) -> None:
    losses, _ = train_losses("mocov3", people_root, tmp_path, steps=8, batch_size=8, img_size=(64, 32))
    assert decreased(losses), losses


def test_colour_switch_reaches_both_views() -> None:
    from saip_bench.errors import SpecError

    method = build_method("mocov3", colour={"jitter_p": 0.0})
    assert method.augs["global1_aug"].jitter_p == 0.0 and method.augs["global2_aug"].solarize_p == 0.2
    with pytest.raises(SpecError, match="mocov3 colour"):
        build_method("mocov3", colour={"nope": 1})
