"""DINO: multi-crop bookkeeping, schedules, EMA teacher, the collapse statistic and guard, training."""

from __future__ import annotations

import math

import pytest
import torch

from saip_bench.pretrain.components.ema import cosine_momentum
from saip_bench.pretrain.methods.dino import embedding_std
from saip_bench.pretrain.trainer import TrainingError

from .conftest import build_method, decreased, fake_batch, train_losses


def test_multi_crop_views_and_loss_pairs() -> None:
    method = build_method("dino", local_crops=3)
    views = method.make_views(fake_batch(2), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views["global"]] == [(2, 3, 128, 64)] * 2
    assert [tuple(v.shape) for v in views["local"]] == [(2, 3, 64, 32)] * 3
    assert not torch.equal(views["global"][0], views["global"][1])
    out = method(views)
    assert {"loss", "loss/dino", "stat/embedding_std", "stat/teacher_entropy"} <= set(out)
    # a fresh head with a zero centre: the loss is a cross-entropy over 1024 outputs, near log(1024)
    assert 0.5 * math.log(1024) < float(out["loss"].detach()) < 2 * math.log(1024)


def test_embedding_std_by_hand() -> None:
    same = torch.ones(6, 4)
    assert float(embedding_std(same)) == pytest.approx(0.0, abs=1e-7)
    opposite = torch.tensor([[2.0, 0, 0, 0], [-3.0, 0, 0, 0]])  # normalised: +e1 and -e1
    assert float(embedding_std(opposite)) == pytest.approx(math.sqrt(2) / 4, rel=1e-6)


def test_teacher_temperature_warms_up_over_a_fraction_of_steps() -> None:
    method = build_method(
        "dino", warmup_teacher_temp=0.04, teacher_temp=0.07, teacher_temp_warmup_fraction=0.1
    )
    method.on_after_step(5, 100)  # warm-up = 10 steps
    assert method.loss_fn.current_teacher_temp() == pytest.approx(0.055)
    method.on_after_step(50, 100)
    assert method.loss_fn.current_teacher_temp() == pytest.approx(0.07)


def test_teacher_is_an_ema_of_backbone_and_head_over_global_steps() -> None:
    method = build_method("dino", momentum_base=0.9)
    with torch.no_grad():
        for p in list(method.backbone.parameters()) + list(method.head.parameters()):
            p.add_(1.0)  # student moves by +1, teacher still at the initial weights
    before = method.teacher.module.head.mlp[0].weight.clone()
    student = method.head.mlp[0].weight.detach().clone()
    method.on_after_step(3, 10)
    m = cosine_momentum(3, 10, 0.9)
    torch.testing.assert_close(method.teacher.module.head.mlp[0].weight, m * before + (1 - m) * student)
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_last_layer_is_frozen_for_the_first_fraction_of_steps() -> None:
    method = build_method("dino", freeze_last_layer_fraction=0.05)
    views = method.make_views(fake_batch(2), torch.Generator().manual_seed(0))
    method(views)["loss"].backward()
    grad = method.head.last_layer.weight.grad
    assert grad is not None and float(grad.abs().sum()) == 0  # zero, but present (DDP-safe)
    method.zero_grad()
    method.on_after_step(10, 100)  # frozen for 5 of 100 steps
    method(views)["loss"].backward()
    assert float(method.head.last_layer.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("backbone", ["tinyvit_5m", "starnet_s3"])
def test_hybrid_and_convnet_backbones_train(backbone: str) -> None:
    method = build_method("dino", backbone_name=backbone, local_crops=1)
    views = method.make_views(fake_batch(2), torch.Generator().manual_seed(0))
    out = method(views)
    out["loss"].backward()
    assert math.isfinite(float(out["loss"].detach()))
    # every backbone weight learns except the timm classifier-head norm, which forward_features skips
    missing = [n for n, p in method.backbone.named_parameters() if p.grad is None]
    assert all(".head." in n for n in missing), missing


def test_collapse_guard_stops_a_collapsed_run(people_root, tmp_path) -> None:
    """A backbone frozen at zero maps every image to one embedding: std 0 -> the trainer stops."""
    from saip_bench.pretrain.trainer import Trainer, load_preset

    method = build_method("dino", img_size=(64, 32), local_crops=1)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.zero_()
            p.requires_grad_(False)
    config, _ = load_preset("dino", "quick", {"steps": 6, "batch_size": 4, "img_size": [64, 32],
                                               "source_size": [64, 32], "guard": {"patience": 2}})
    trainer = Trainer(method, config, people_root, tmp_path, seed=0, progress=False)
    with pytest.raises(TrainingError, match="collapse"):
        trainer.fit()
    assert trainer.step == 2
    assert trainer.history[-1]["stat/embedding_std"] < 1e-6


def test_paper_preset_is_the_dino_recipe() -> None:
    from saip_bench.pretrain.trainer import load_preset

    train, config = load_preset("dino", "paper")
    assert config["out_dim"] == 65536 and config["local_crops"] == 8
    temperatures = (config["warmup_teacher_temp"], config["teacher_temp"], config["student_temp"])
    assert temperatures == (0.04, 0.07, 0.1)
    assert config["center_momentum"] == 0.9 and config["momentum_base"] == 0.996
    assert train.blr == pytest.approx(5e-4) and train.clip_grad == 3.0


def test_few_steps_through_the_trainer_reduce_the_loss(people_root, tmp_path) -> None:
    losses, _ = train_losses("dino", people_root, tmp_path, steps=8, batch_size=8, img_size=(64, 32),
                             local_crops=1)
    assert decreased(losses), losses


def test_warm_up_starts_at_the_warm_up_temperature_and_survives_a_reload() -> None:
    warm = {"warmup_teacher_temp": 0.04, "teacher_temp": 0.07, "teacher_temp_warmup_fraction": 0.1}
    method = build_method("dino", **warm)
    views = method.make_views(fake_batch(2), torch.Generator().manual_seed(0))
    out = method(views)  # step 0: the length is not known yet, the temperature is the warm-up one
    assert method.loss_fn.current_teacher_temp() == pytest.approx(0.04)
    assert float(out["stat/teacher_temp"]) == pytest.approx(0.04)  # what the step divided by
    method.on_after_step(5, 100)
    state = method.state_dict()
    assert "loss_fn.temperature" not in state  # derived from the step and the warm-up length, not saved
    resumed = build_method("dino", **warm)
    resumed.load_state_dict(state)
    out = resumed(views)  # a resumed run's first step already knows the 10-step warm-up
    assert resumed.loss_fn.current_teacher_temp() == pytest.approx(0.055)
    assert float(out["stat/teacher_temp"]) == pytest.approx(0.055)


def test_colour_switch_reaches_every_view() -> None:
    """colour={jitter_p: 0, grayscale_p: 0} leaves blur/solarisation; unknown fields are refused."""
    from saip_bench.errors import SpecError

    method = build_method("dino", colour={"jitter_p": 0.0, "grayscale_p": 0.0})
    assert all(a.jitter_p == 0.0 and a.grayscale_p == 0.0 for a in method.augs.values())
    assert method.augs["global1_aug"].blur_p == 1.0 and build_method("dino").augs["local_aug"].jitter_p == 0.8
    with pytest.raises(SpecError, match="dino colour: unknown colour field"):
        build_method("dino", colour={"hue_p": 0.1})


@pytest.mark.parametrize("name", ["dino", "solider"])
def test_the_student_head_runs_once_for_all_views_as_it_would_view_by_view(name: str) -> None:
    """One head call per step (the 65536-wide last layer normalised once, not once per view), with the
    logits each view would get from its own call (rows are independent; sums may round differently)."""
    method = build_method(name, local_crops=3)
    views = method.make_views(fake_batch(2), torch.Generator().manual_seed(0))
    calls = []
    original = method.head_logits

    def counted(features):
        calls.append(features.shape[0])
        return original(features)

    method.head_logits = counted
    with torch.no_grad():
        out = method(views)
        assert calls == [2 * 5]  # 2 images x (2 global + 3 local views), in one call
        features = torch.randn(10, method.head.mlp[0].in_features)
        together, _ = original(features)
        one_by_one = torch.cat([original(rows)[0] for rows in features.split(2)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(out["loss"])
