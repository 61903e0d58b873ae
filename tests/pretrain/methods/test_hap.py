"""HAP: keypoint-guided part masking, keypoints following crops/flips, alignment loss, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saip_bench.pretrain.methods._common import COCO_FLIP, crop_views_with_keypoints
from saip_bench.pretrain.methods.hap import (
    BODY_PARTS,
    alignment_loss,
    part_patch_masks,
    structure_guided_noise,
)

from .conftest import build_method, decreased, fake_batch, train_losses


def _keypoints(points: dict[int, tuple[float, float]]) -> torch.Tensor:
    kp = torch.zeros(1, 17, 3)
    for index, (x, y) in points.items():
        kp[0, index] = torch.tensor([x, y, 2.0])
    return kp


def test_part_patches_are_the_segment_boxes_in_patch_units() -> None:
    # left arm: shoulder (5) at patch (col 0, row 1), elbow (7) at (1, 2), wrist (9) at (1, 4)
    kp = _keypoints({5: (8.0, 20.0), 7: (20.0, 40.0), 9: (30.0, 70.0)})
    masks = part_patch_masks(kp, grid=(8, 4), patch=16)
    assert masks.shape == (1, len(BODY_PARTS), 32) and masks.dtype == bool
    left_arm = np.flatnonzero(masks[0, 1]).tolist()
    # boxes rows 1-2 x cols 0-1 and rows 2-4 x col 1 -> raster indices row * 4 + col
    expected = sorted({r * 4 + c for r in (1, 2) for c in (0, 1)} | {r * 4 + 1 for r in (2, 3, 4)})
    assert left_arm == expected
    assert not masks[0, [i for i in range(len(BODY_PARTS)) if i != 1]].any()  # no other part is visible


def test_invisible_or_outside_keypoints_give_no_part() -> None:
    kp = _keypoints({5: (8.0, 20.0), 7: (20.0, 40.0), 9: (30.0, 70.0)})
    kp[0, 7, 2] = 0  # elbow not visible: both arm segments lose an end
    kp[0, 9, 0] = 500.0  # and the wrist is outside the view
    assert not part_patch_masks(kp, (8, 4), 16).any()


def _segment_boxes(keypoints: np.ndarray, grid: tuple[int, int], patch: int) -> list[list[set[int]]]:
    """The rule in plain Python, one image and segment at a time: the oracle of the batched masks."""
    grid_h, grid_w = grid
    result = []
    for points in keypoints:
        def cell(k, points=points):
            x, y, visible = (float(v) for v in points[k])
            col, row = math.floor(x / patch), math.floor(y / patch)
            usable = visible > 0 and x >= 0 and y >= 0 and col < grid_w and row < grid_h
            return (col, row) if usable else None

        parts = []
        for segments in BODY_PARTS:
            covered: set[int] = set()
            for i, j in segments:
                a, b = cell(i), cell(j)
                if a is None or b is None:
                    continue
                covered |= {r * grid_w + c for r in range(min(a[1], b[1]), max(a[1], b[1]) + 1)
                            for c in range(min(a[0], b[0]), max(a[0], b[0]) + 1)}
            parts.append(covered)
        result.append(parts)
    return result


def test_batched_part_masks_match_the_rule_applied_one_segment_at_a_time() -> None:
    generator = torch.Generator().manual_seed(5)
    # keypoints partly outside the 64x128 view, partly invisible
    kp = torch.rand(32, 17, 3, generator=generator) * torch.tensor([90.0, 160.0, 1.0]) \
        - torch.tensor([10.0, 10.0, 0.3])
    masks = part_patch_masks(kp, (8, 4), 16)
    expected = _segment_boxes(kp.numpy(), (8, 4), 16)
    assert any(part for parts in expected for part in parts) and not all(all(p) for p in expected)
    for b in range(32):
        for part in range(len(BODY_PARTS)):
            assert set(np.flatnonzero(masks[b, part]).tolist()) == expected[b][part], (b, part)


def test_prioritised_patches_lie_inside_body_parts() -> None:
    batch = fake_batch(16)
    kp = batch["keypoints"]
    grid = (8, 4)
    rngs = [np.random.default_rng(i) for i in range(16)]
    noise = structure_guided_noise(kp, grid, 16, rngs, num_parts=6, part_patch_fraction=1.0)
    masks = part_patch_masks(kp, grid, 16)
    prioritised_total = 0
    for b in range(16):
        union = set(np.flatnonzero(masks[b].any(0)).tolist())
        prioritised = set(torch.nonzero(noise[b] >= 1.0).flatten().tolist())
        assert prioritised <= union
        prioritised_total += len(prioritised)
    assert prioritised_total > 0  # some images did prioritise body parts
    # the priorities are 100, 99, ... in part order: at most num_parts distinct levels
    assert set(noise[noise >= 1.0].tolist()) <= {100.0 - k for k in range(len(BODY_PARTS))}


def test_zero_parts_is_plain_random_masking() -> None:
    noise = structure_guided_noise(fake_batch(4)["keypoints"], (8, 4), 16,
                                   [np.random.default_rng(i) for i in range(4)], num_parts=0)
    assert float(noise.max()) < 1.0


def test_keypoints_follow_a_full_crop_and_flip_with_left_right_swap() -> None:
    images = torch.rand(2, 3, 128, 64)
    kp = fake_batch(2)["keypoints"]
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    crops, moved = crop_views_with_keypoints(images, kp, rngs, (128, 64), (1.0, 1.0), (0.5, 0.5), flip_p=1.0)
    torch.testing.assert_close(crops, images.flip(-1), atol=1e-4, rtol=0)  # full-image crop, mirrored
    expected = kp[:, list(COCO_FLIP)].clone()
    expected[..., 0] = 64 - expected[..., 0]
    torch.testing.assert_close(moved, expected)


def test_keypoints_scale_with_a_zoomed_crop() -> None:
    images = torch.rand(1, 3, 128, 64)
    kp = torch.zeros(1, 17, 3)
    kp[0, :, :] = torch.tensor([32.0, 64.0, 2.0])  # the image centre
    kp[0, 0] = torch.tensor([1.0, 1.0, 2.0])  # a corner point: falls outside a zoomed centre crop
    rngs = [np.random.default_rng(3)]
    _, moved = crop_views_with_keypoints(images, kp, rngs, (128, 64), (0.25, 0.25), (0.5, 0.5), flip_p=0.0)
    assert float(moved[0, 0, 2]) == 0.0  # outside -> invisible
    assert float(moved[0, 1, 2]) == 2.0


def test_alignment_loss_by_hand() -> None:
    """Identical orthonormal CLS pairs: logits 1/T on the diagonal, 0 elsewhere."""
    temperature, batch = 0.2, 4
    cls = torch.eye(batch, 8)
    positive = math.exp(1 / temperature)
    per_direction = -math.log(positive / (positive + batch - 1)) * 2 * temperature
    assert float(alignment_loss(cls, cls, temperature)) == pytest.approx(2 * per_direction, rel=1e-5)
    # swapping the pairing makes every positive a negative: the loss grows
    assert float(alignment_loss(cls, cls.roll(1, 0), temperature)) > 2 * per_direction


def test_views_hold_two_independent_structure_masks() -> None:
    method = build_method("hap")
    views = method.make_views(fake_batch(4), torch.Generator().manual_seed(0))
    (_, _, mask_a), (_, _, mask_b) = views["masks"]
    assert mask_a.sum(1).tolist() == [16.0] * 4  # quick/paper ratio 0.5 of 32 patches
    assert not torch.equal(mask_a, mask_b)
    out = method(views)
    expected = float(out["loss/recon"]) + 0.05 * float(out["loss/align"])
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)


def test_missing_keypoints_are_a_clear_error() -> None:
    from saip_bench.errors import SpecError

    method = build_method("hap")
    batch = fake_batch(2)
    del batch["keypoints"]
    with pytest.raises(SpecError, match="keypoints"):
        method.make_views(batch, torch.Generator())


def test_few_steps_through_the_trainer_reduce_the_loss(people_root, tmp_path) -> None:
    losses, method = train_losses("hap", people_root, tmp_path, steps=8, batch_size=8)
    assert decreased(losses), losses
    assert method.needs_keypoints and method.hyperparameters()["align_weight"] == 0.05


def test_cli_refuses_a_hybrid_with_a_clear_message(people_root, tmp_path, capsys) -> None:
    from saip_bench.cli import main

    args = ["pretrain", "--method", "hap", "--backbone", "tinyvit_5m", "--data", str(people_root),
            "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 2
    assert "supported families: vit" in capsys.readouterr().err
