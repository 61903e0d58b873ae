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

from collections.abc import Callable, Sequence

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


def heatmap_cell_targets(heatmaps: torch.Tensor, cell: int) -> np.ndarray:
    """(B, K, H, W) target heatmaps -> per-token vectors (B*h*w, K*cell*cell): the heatmap values inside each
    token's patch (``cell`` = patch size / heatmap stride, 4 for ViT-16 tokens over stride-4 heatmaps), in
    the row-major token order of ``patch_targets``."""
    b, _, h, w = heatmaps.shape
    if h % cell or w % cell:
        raise ValueError(f"heatmap size {h}x{w} is not a multiple of the cell size {cell}")
    cells = heatmaps.unfold(2, cell, cell).unfold(3, cell, cell)  # B, K, h, w, c, c
    return cells.permute(0, 2, 3, 1, 4, 5).reshape(b * (h // cell) * (w // cell), -1).numpy()


def with_neighbours(feature: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, 9C, h, w): each token with its 3x3 neighbourhood (zero-padded), the receptive
    field of one 3x3 layer, so a linear probe can use context as a small head would."""
    b, c, h, w = feature.shape
    return torch.nn.functional.unfold(feature, 3, padding=1).view(b, 9 * c, h, w)


@torch.no_grad()
def keypoint_locality(
    backbone: Backbone,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    blocks: Sequence[int],
    alpha: float = 100.0,
) -> list[dict[str, float]]:
    """Per block: held-out R² of a ridge from tokens to the keypoint heatmap values inside each token's patch.

    ``train`` / ``test``: (images (B, 3, H, W) in [0, 1], target heatmaps (B, K, H/s, W/s)) of pose crops.
    A convex fit, so unlike a trained head it cannot fail by optimisation: it asks whether the features
    carry sub-patch keypoint positions. ``r2`` uses the token alone, ``r2_3x3`` its 3x3 neighbourhood.
    """
    patch = backbone.reduction
    stride = train[0].shape[-2] // train[1].shape[-2]
    if patch % stride:
        raise ValueError(f"patch size {patch} is not a multiple of the heatmap stride {stride}")
    cell = patch // stride
    targets = np.concatenate([heatmap_cell_targets(train[1], cell), heatmap_cell_targets(test[1], cell)])
    n_train = len(train[1]) * (train[1].shape[-2] // cell) * (train[1].shape[-1] // cell)
    was_training = backbone.training
    backbone.eval()
    maps = [backbone.intermediate(normalize(images), list(blocks)) for images, _ in (train, test)]
    backbone.train(was_training)
    rows = []
    for index, block in enumerate(blocks):
        row: dict[str, float] = {"block": int(block)}
        for key, transform in (("r2", lambda f: f), ("r2_3x3", with_neighbours)):
            grids = [transform(m[index]) for m in maps]
            tokens = [g.permute(0, 2, 3, 1).reshape(-1, g.shape[1]) for g in grids]
            features = torch.cat(tokens).double().numpy()
            if len(features) != len(targets):
                raise ValueError(f"block {block} does not give one token per {patch}x{patch} patch")
            row[key] = held_out_r2(features, targets, n_train, alpha)
        rows.append(row)
    return rows


def probe_backbones(
    arch: str, size: tuple[int, int], checkpoints: Sequence[str], seed: int
) -> dict[str, Backbone]:
    """The probes' rows: ``random`` (``arch`` initialised under ``seed``), then each ``name=path``
    checkpoint."""
    from saip_bench.backbones import create_backbone
    from saip_bench.pretrain.export import load_backbone

    torch.manual_seed(seed)
    backbones = {"random": create_backbone(arch, size)}
    for item in checkpoints:
        name, path = item.split("=", 1)
        backbones[name] = load_backbone(path, size)
    return backbones


def block_table(results: dict[str, list[dict[str, float]]], blocks: Sequence[int], column: str,
                cell: Callable[[dict[str, float]], str]) -> str:
    """Markdown table, one row per backbone, one column per block (``column`` names its cells)."""
    lines = ["| backbone | " + " | ".join(f"block {b} {column}" for b in blocks) + " |",
             "|---|" + "---|" * len(blocks)]
    lines += [f"| {name} | " + " | ".join(cell(r) for r in rows) + " |" for name, rows in results.items()]
    return "\n".join(lines)
