"""SOLIDER: token pseudo-labels by clustering, the semantic controller, lambda weighting, training."""

from __future__ import annotations

import math

import pytest
import torch

from saip_bench.pretrain.methods.solider import (
    SemanticController,
    kmeans,
    semantic_part_labels,
    semantic_weight,
)

from .conftest import build_method, decreased, fake_batch, train_losses


def _person_tokens(height: int = 8, width: int = 4, dim: int = 6, background_rows: int = 0) -> torch.Tensor:
    """Token map: a low-norm background border column, three high-norm body bands top to bottom."""
    tokens = torch.zeros(height, width, dim)
    tokens[..., 5] = 0.1  # background: small norm
    bands = [(0, 3), (3, 5), (5, 8)]  # head/torso, hips, legs
    for k, (start, stop) in enumerate(bands):
        tokens[start:stop, 1:, k] = 5.0  # the three body parts differ in direction
    return tokens.view(1, height * width, dim)


def test_pseudo_labels_by_hand() -> None:
    labels, labelled = semantic_part_labels(_person_tokens(), (8, 4), parts=3, min_foreground=0.5)
    grid = labels.view(8, 4)
    assert bool(labelled[0])  # 24 of 32 tokens are foreground
    assert grid[:, 0].tolist() == [0] * 8  # background column
    assert grid[0:3, 1:].unique().tolist() == [1]  # topmost part is 1
    assert grid[3:5, 1:].unique().tolist() == [2]
    assert grid[5:8, 1:].unique().tolist() == [3]


def test_small_foreground_gets_no_labels() -> None:
    tokens = _person_tokens().view(8, 4, 6).clone()
    tokens[:, 1:3] = 0.0
    tokens[:, 1:3, 5] = 0.1  # now only one column (8 of 32 tokens) is foreground
    _, labelled = semantic_part_labels(tokens.view(1, 32, 6), (8, 4), parts=3, min_foreground=0.5)
    assert not bool(labelled[0])


def test_kmeans_ignores_invalid_points_and_converges() -> None:
    x = torch.tensor([[[0.0], [0.1], [10.0], [10.2], [1000.0]]])
    valid = torch.tensor([[True, True, True, True, False]])
    labels, centres = kmeans(x, valid, torch.tensor([[[0.0], [1.0]]]), iters=5)
    assert labels[0, :4].tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(centres[0, :, 0], torch.tensor([0.05, 10.1]))


def test_controller_by_hand() -> None:
    controller = SemanticController(3)
    with torch.no_grad():
        controller.scale.weight.zero_()
        controller.scale.bias.zero_()
        controller.shift.weight.copy_(torch.tensor([[1.0, 0.0]] * 3))
        controller.shift.bias.zero_()
    x = torch.ones(2, 5, 3)
    out = controller(x, semantic_weight(torch.tensor([1.0, 0.0])))
    assert out[0].unique().tolist() == pytest.approx([math.log(2) + 1.0])  # softplus(0) * 1 + lambda
    assert out[1].unique().tolist() == pytest.approx([math.log(2)])


def test_lambda_zero_switches_the_semantic_loss_off() -> None:
    method = build_method("solider")
    views = method.make_views(fake_batch(4), torch.Generator().manual_seed(0))
    views["lambda"] = torch.zeros(4)
    out = method(views)
    assert float(out["loss/semantic"]) == 0.0
    assert float(out["loss"].detach()) == pytest.approx(float(out["loss/dino"]))
    views["lambda"] = torch.ones(4)
    out = method(views)
    if float(out["stat/labelled_fraction"]) > 0:
        assert float(out["loss/semantic"]) > 0
        total = float(out["loss/dino"]) + float(out["loss/semantic"])
        assert float(out["loss"].detach()) == pytest.approx(total, rel=1e-5)


def test_teacher_has_the_controller_and_is_updated() -> None:
    method = build_method("solider")
    assert hasattr(method.teacher.module, "controller")
    with torch.no_grad():
        method.controller.scale.weight.add_(1.0)
    before = method.teacher.module.controller.scale.weight.clone()
    method.on_after_step(1, 10)
    assert not torch.equal(before, method.teacher.module.controller.scale.weight)


def test_paper_preset() -> None:
    from saip_bench.pretrain.trainer import load_preset

    _, config = load_preset("solider", "paper")
    assert config["parts"] == 3 and config["semantic_weight"] == 1.0 and config["out_dim"] == 65536


def test_few_steps_through_the_trainer_reduce_the_loss(people_root, tmp_path) -> None:
    losses, _ = train_losses("solider", people_root, tmp_path, steps=7, batch_size=8, img_size=(64, 32),
                             local_crops=1)
    assert decreased(losses), losses
