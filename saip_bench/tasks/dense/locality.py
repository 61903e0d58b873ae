"""How much of each patch's pixels a backbone's tokens still carry: a ridge-probe R² per block.

Why: a random-init timm ViT is close to the identity after its patch embedding (small residual branches), so
its tokens are a near-lossless linear code of the patch pixels at every depth. A small frozen dense head
on such tokens is a small conv net on pixels, which is a strong baseline on simple images. A pretrained
backbone only beats it on a dense probe if its tokens add context *and* keep enough within-patch detail
for sub-patch localisation. This probe measures the second part. It explains a dense result; it is not a
task metric.

The R² is measured on held-out images: the ridge is fitted on the tokens of the first half of the images and
scored on the second half, so memorising image-specific tokens cannot raise it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import Ridge

from saip_bench.backbones import Backbone
from saip_bench.tasks.common import normalize


def patch_targets(images: torch.Tensor, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, H, W) in [0, 1] -> per-token pixel vectors (B*h*w, 3*p*p), raw and minus the patch's mean
    colour (the "detail" a flat colour code cannot give). Tokens in row-major (h, w) order."""
    _, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    cells = images.unfold(2, patch, patch).unfold(3, patch, patch)  # B, C, h, w, p, p
    cells = cells.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, patch * patch)
    detail = cells - cells.mean(dim=2, keepdim=True)
    return cells.reshape(len(cells), -1).numpy(), detail.reshape(len(detail), -1).numpy()


def held_out_r2(features: np.ndarray, targets: np.ndarray, n_train: int, alpha: float) -> float:
    """R² (pooled over all target dims) of a ridge fitted on the first ``n_train`` rows, on the rest."""
    mean, std = features[:n_train].mean(0), features[:n_train].std(0) + 1e-6
    x = (features - mean) / std
    model = Ridge(alpha=alpha).fit(x[:n_train], targets[:n_train])
    residual = targets[n_train:] - model.predict(x[n_train:])
    centred = targets[n_train:] - targets[:n_train].mean(0)
    return float(1.0 - (residual**2).sum() / (centred**2).sum())


@torch.no_grad()
def token_locality(
    backbone: Backbone, images: torch.Tensor, blocks: Sequence[int], alpha: float = 10.0
) -> list[dict[str, float]]:
    """Per block: held-out R² of the patch pixels (``pixel_r2``) and of their within-patch detail
    (``detail_r2``) from that block's tokens. ``images``: (B, 3, H, W) in [0, 1], B >= 2."""
    if len(images) < 2:
        raise ValueError("token_locality needs at least 2 images (one to fit, one to score)")
    patch = backbone.reduction
    pixels, detail = patch_targets(images, patch)
    tokens_per_image = (images.shape[2] // patch) * (images.shape[3] // patch)
    n_train = (len(images) // 2) * tokens_per_image
    was_training = backbone.training
    backbone.eval()
    maps = backbone.intermediate(normalize(images), list(blocks))
    backbone.train(was_training)
    rows = []
    for block, feature in zip(blocks, maps, strict=True):
        if feature.shape[-2] * feature.shape[-1] != tokens_per_image:
            raise ValueError(f"block {block} gives a {tuple(feature.shape[-2:])} map, not one token per "
                             f"{patch}x{patch} patch")
        flat = feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1]).double().numpy()
        rows.append({"block": int(block), "pixel_r2": held_out_r2(flat, pixels, n_train, alpha),
                     "detail_r2": held_out_r2(flat, detail, n_train, alpha)})
    return rows
