"""HAP (Yuan et al., NeurIPS'23): MAE with human-structure-guided masking + structure-invariant alignment.

What is implemented (checked against the authors' release, junkunyuan/HAP, ``models_mae_pose.py`` and
``mask_strategy.py``; the code here is our own):

- **Structure-guided masking.** COCO-17 keypoints define six parts (face, left/right arm, left/right leg,
  upper body), each a set of skeleton segments. Per image, a number of parts ``n ~ U{0..num_parts}`` is
  drawn; in a random part order, each part that has a visible segment contributes the patches of the
  bounding boxes (in patch units, inclusive) of its segments, of which a random fraction
  ``U(0, part_patch_fraction)`` gets masking priority (earlier parts first). The remaining masked
  patches are random, so the overall ratio stays ``mask_ratio``.
- **Two masked views** of the same crop with independent masks; the reconstruction loss (normalised-pixel
  MSE on removed patches, shared ``components.mae_decoder``) is averaged over the two.
- **Structure-invariant alignment**: symmetric InfoNCE between the two views' CLS tokens (temperature 0.2,
  scaled by 2T, other images of the global batch as negatives), weighted by ``align_weight`` (0.05).

Uncertain / deviations: the release's default ``mask_ratio`` is 0.5 in its README command (used in
``paper``); the release initialises from an ImageNet MAE checkpoint (we start from the same random init
as every method, for a fair comparison); the release applies its keypoint-aware augmentation with
albumentations (we crop/flip keypoints with the same batched view ops as the other methods).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from saip_bench.backbones import Backbone
from saip_bench.devices import host_to_device
from saip_bench.errors import SpecError
from saip_bench.pretrain.base import METHODS
from saip_bench.pretrain.components.mae_decoder import masked_patch_mse, masking_from_noise
from saip_bench.pretrain.components.vit import vit_forward_visible
from saip_bench.pretrain.methods._common import batch_rngs, crop_views_with_keypoints, info_nce
from saip_bench.pretrain.methods.mae import MAE
from saip_bench.pretrain.views import normalize

# COCO-17 skeleton segments per body part (keypoint index pairs).
BODY_PARTS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 1), (0, 2), (1, 2), (1, 3), (2, 4)),  # face
    ((5, 7), (7, 9)),  # left arm
    ((6, 8), (8, 10)),  # right arm
    ((11, 13), (13, 15)),  # left leg
    ((12, 14), (14, 16)),  # right leg
    ((6, 11), (5, 12)),  # upper body (torso diagonals)
)


# the skeleton segments flat, and the part each belongs to
SEGMENTS = np.array([segment for part in BODY_PARTS for segment in part])  # (S, 2) keypoint indices
SEGMENT_PART = np.array([p for p, part in enumerate(BODY_PARTS) for _ in part])  # (S,)


def part_patch_masks(keypoints: torch.Tensor, grid: tuple[int, int], patch: int) -> np.ndarray:
    """(B, parts, L) bool: the patches covered by each part's segment boxes (in patch units, inclusive),
    per image; a segment counts when both its keypoints are visible and inside the view.

    ``keypoints`` (B, 17, 3) are in view pixels with visibility > 0 where usable. Why numpy over the whole
    batch at once: the per-image, per-segment version ran ~170 tiny host ops an image, 10,951 of a
    batch-64 ``paper`` step's ops (``benchmarks/roofline.py``), each stalling the kernel launches.
    """
    grid_h, grid_w = grid
    kp = keypoints.detach().float().cpu().numpy()
    cells = np.floor(kp[..., :2] / np.float32(patch)).astype(np.int64)  # (B, 17, 2) as (col, row)
    inside = (kp[..., 2] > 0) & (kp[..., 0] >= 0) & (kp[..., 1] >= 0)
    inside &= (cells[..., 0] < grid_w) & (cells[..., 1] < grid_h)
    first, second = SEGMENTS[:, 0], SEGMENTS[:, 1]
    usable = inside[:, first] & inside[:, second]  # (B, S)
    low = np.minimum(cells[:, first], cells[:, second])[..., None, None]  # (B, S, 2, 1, 1)
    high = np.maximum(cells[:, first], cells[:, second])[..., None, None]
    rows = np.arange(grid_h).reshape(-1, 1)
    cols = np.arange(grid_w).reshape(1, -1)
    boxes = (usable[..., None, None] & (rows >= low[:, :, 1]) & (rows <= high[:, :, 1])
             & (cols >= low[:, :, 0]) & (cols <= high[:, :, 0]))  # (B, S, H, W)
    covered = np.stack([boxes[:, SEGMENT_PART == part].any(axis=1) for part in range(len(BODY_PARTS))], 1)
    return covered.reshape(kp.shape[0], len(BODY_PARTS), grid_h * grid_w)


def structure_guided_noise(
    keypoints: torch.Tensor,
    grid: tuple[int, int],
    patch: int,
    rngs: Sequence[np.random.Generator],
    num_parts: int = 6,
    part_patch_fraction: float = 0.3,
) -> torch.Tensor:
    """Per-patch masking scores (B, L): larger = masked first. Body-part patches get scores >= 1.

    Random patches get U(0, 1); the chosen patches of the k-th selected part get ``100 - k`` (so earlier
    parts win when the masking budget is smaller than the prioritised set).
    """
    length = grid[0] * grid[1]
    noise = np.stack([rng.random(length) for rng in rngs])
    masks = part_patch_masks(keypoints, grid, patch)
    for b, rng in enumerate(rngs):
        wanted = int(rng.integers(0, num_parts + 1))
        used = 0
        for part in rng.permutation(len(BODY_PARTS)).tolist():
            if used >= wanted:
                break
            patches = np.flatnonzero(masks[b, part])  # ascending flat indices
            if patches.size == 0:
                continue
            count = int(patches.size * rng.uniform(0.0, part_patch_fraction))
            chosen = rng.permutation(patches)[:count]
            noise[b, chosen] = 100.0 - used
            used += 1
    return torch.from_numpy(noise).float()


def alignment_loss(cls_a: torch.Tensor, cls_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between the CLS of the two masked views (HAP's structure-invariant alignment)."""
    return info_nce(cls_a, cls_b, temperature) + info_nce(cls_b, cls_a, temperature)


# HAP's settings beside MAE's (mask ratio 0.5 instead of MAE's 0.75)
HAP_DEFAULTS: dict[str, Any] = {"mask_ratio": 0.5, "align_weight": 0.05, "align_temperature": 0.2,
                                "num_parts": 6, "part_patch_fraction": 0.3}


@METHODS.register("hap", paper="Yuan et al., NeurIPS 2023")
class HAP(MAE):
    """HAP: MAE with keypoint-guided body-part masking and a two-view CLS alignment loss (ViT only)."""

    name: ClassVar[str] = "hap"
    config_keys: ClassVar[frozenset[str]] = MAE.config_keys | frozenset(HAP_DEFAULTS)
    needs_keypoints: ClassVar[bool] = True

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, {**HAP_DEFAULTS, **config})
        if not 0 <= int(self.config["num_parts"]) <= len(BODY_PARTS):
            raise SpecError(f"hap num_parts must be in 0..{len(BODY_PARTS)}")
        if not 0.0 <= float(self.config["part_patch_fraction"]) <= 1.0:
            raise SpecError("hap part_patch_fraction must be in [0, 1]")
        if float(self.config["align_temperature"]) <= 0:
            raise SpecError("hap align_temperature must be > 0")

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        if "keypoints" not in batch:
            raise SpecError("hap needs keypoints in the batch (keypoints.json in the pretraining folder)")
        rngs = batch_rngs(batch, generator)
        crops, keypoints = crop_views_with_keypoints(
            batch["image"], batch["keypoints"], rngs, self.view_size,
            self.config["crop_scale"], self.config["crop_ratio"],
        )
        image = normalize(crops)
        grid = self.grid(image)
        patch = self.patch_size
        masks = []
        for _ in range(2):
            noise = host_to_device(structure_guided_noise(
                keypoints, grid, patch, rngs,
                int(self.config["num_parts"]), float(self.config["part_patch_fraction"]),
            ), image.device)
            masks.append(masking_from_noise(noise, self.keep_count(grid)))
        return {"image": image, "masks": masks, "grid": grid}

    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        image = views["image"]
        body = self.backbone.body
        recon = []
        cls_tokens = []
        for ids_keep, ids_restore, mask in views["masks"]:
            tokens, grid = vit_forward_visible(body, image, ids_keep)
            prefix = self.prefix
            pred = self.decoder(tokens[:, :prefix], tokens[:, prefix:], ids_restore, grid)
            recon.append(masked_patch_mse(pred, self.target(image), mask, self.patch_size,
                                          bool(self.config["norm_pix"])))
            cls_tokens.append(tokens[:, 0])
        loss_recon = 0.5 * (recon[0] + recon[1])
        loss_align = alignment_loss(cls_tokens[0], cls_tokens[1], float(self.config["align_temperature"]))
        loss = loss_recon + float(self.config["align_weight"]) * loss_align
        return {"loss": loss, "loss/recon": loss_recon.detach(), "loss/align": loss_align.detach()}
