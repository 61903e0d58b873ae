"""Helpers shared by the baseline methods (not a method: discovery skips ``_`` modules).

Why here: InfoNCE and the family check are used by several baselines (MoCo v3, HAP); one copy keeps
their maths identical. Generic pieces (DINO head/loss, EMA, MAE decoder, ViT token access) live in
``saip_bench.pretrain.components`` and are reused, not copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import distributed as dist

from saip_bench.backbones import Backbone
from saip_bench.errors import SpecError, UserError
from saip_bench.pretrain.views import (
    ColorAugment,
    colour_augments,
    crop_params,
    crop_resize,
    random_resized_crop,
    sample_rngs,
)


def world_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 (no gradient, as in MoCo v3 / HAP); identity on one process."""
    _, world = world_info()
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo-v3 contrastive loss: row i of ``query`` must pick key i among all (gathered) keys.

    Both inputs are L2-normalised here; keys from other processes act as negatives. The result
    is scaled by ``2 * temperature`` (MoCo v3, HAP) so its gradient scale does not depend on it.
    """
    query = F.normalize(query.float(), dim=-1)
    key = F.normalize(key.float(), dim=-1)
    keys = gather_no_grad(key)
    rank, _ = world_info()
    logits = query @ keys.t() / temperature
    labels = torch.arange(query.shape[0], device=query.device) + rank * query.shape[0]
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


def require_family(backbone: Backbone, families: frozenset[str], method: str) -> None:
    """Refuse a backbone family a method cannot train, with a message naming the alternatives."""
    if backbone.family not in families:
        raise UserError(
            f"method {method!r} supports backbone families {sorted(families)}; "
            f"{backbone.name!r} is a {backbone.family} backbone"
        )


def config_value(config: dict[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default)
    return default if value is None else value


# --------------------------------------------------------------------------------------------------
# Views: the SAIP views module's ops (per-sample numpy generators) plus keypoint bookkeeping for HAP.
# --------------------------------------------------------------------------------------------------

# COCO-17 left/right keypoint swap under a horizontal flip.
COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def method_colour_augments(
    method: str, config: dict[str, Any], pipelines: dict[str, ColorAugment] | None = None
) -> dict[str, ColorAugment]:
    """A method's photometric pipelines (default: the DINO-style ``global1_aug``, ``global2_aug``,
    ``local_aug``) with the method config's optional ``colour`` overrides (``ColorAugment`` fields) applied
    to each; an unknown field is a SpecError naming the method."""
    try:
        return colour_augments(dict(config.get("colour") or {}), pipelines)
    except ValueError as exc:
        raise SpecError(f"{method} colour: {exc}") from exc


def batch_rngs(batch: dict[str, torch.Tensor], generator: torch.Generator) -> list[np.random.Generator]:
    """Per-sample generators from the loader's ``sample_seed`` (world-size independent views).

    Batches built by hand (tests, benchmarks) may lack ``sample_seed``: seeds then come from ``generator``.
    """
    seeds = batch.get("sample_seed")
    if seeds is None:
        seeds = torch.randint(0, 2**62, (batch["image"].shape[0],), generator=generator)
    return sample_rngs(seeds)


def crop_views(
    images: torch.Tensor, rngs: Sequence[np.random.Generator], out_size: tuple[int, int],
    scale: Sequence[float], ratio: Sequence[float], flip_p: float = 0.5,
) -> torch.Tensor:
    """Random resized crop + flip of a batch (``views.random_resized_crop``), images in [0, 1]."""
    crops, _ = random_resized_crop(images, rngs, out_size, tuple(scale), tuple(ratio), flip_p)
    return crops


def crop_views_with_keypoints(
    images: torch.Tensor, keypoints: torch.Tensor, rngs: Sequence[np.random.Generator],
    out_size: tuple[int, int], scale: Sequence[float], ratio: Sequence[float], flip_p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``crop_views`` but keypoints (B, 17, 3) follow the crop and flip; points outside get v = 0."""
    height, width = images.shape[-2:]
    boxes, flips = crop_params(rngs, height, width, tuple(scale), tuple(ratio), flip_p)
    crops = crop_resize(images, boxes, out_size, flips)
    boxes = boxes.to(keypoints.device)
    top, left, box_h, box_w = boxes.unbind(1)
    kp = keypoints.detach().clone().float()
    kp[..., 0] = (kp[..., 0] - left.view(-1, 1)) * (out_size[1] / box_w).view(-1, 1)
    kp[..., 1] = (kp[..., 1] - top.view(-1, 1)) * (out_size[0] / box_h).view(-1, 1)
    kp = flip_keypoints(kp, flips.to(kp.device), float(out_size[1]))
    valid = (kp[..., 2] > 0) & (kp[..., 0] >= 0) & (kp[..., 0] < out_size[1])
    valid &= (kp[..., 1] >= 0) & (kp[..., 1] < out_size[0])
    kp[..., 2] = torch.where(valid, kp[..., 2], torch.zeros_like(kp[..., 2]))
    return crops, kp


def flip_keypoints(keypoints: torch.Tensor, flipped: torch.Tensor, width: float) -> torch.Tensor:
    """Mirror x (pixel-area convention: x -> width - x) and swap left/right COCO joints where flipped."""
    mirrored = keypoints[:, list(COCO_FLIP)].clone()
    mirrored[..., 0] = width - mirrored[..., 0]
    return torch.where(flipped.view(-1, 1, 1), mirrored, keypoints)
