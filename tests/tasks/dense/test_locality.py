import numpy as np
import pytest
import torch
from torch import nn

from saip_bench.backbones import create_backbone
from saip_bench.tasks.common import normalize
from saip_bench.tasks.dense.locality import (
    block_table,
    heatmap_cell_targets,
    held_out_r2,
    keypoint_locality,
    patch_targets,
    probe_backbones,
    token_locality,
)


class PooledTokens(nn.Module):
    """Every token = the image's mean colour: no within-patch detail at all (negative control)."""

    reduction = 16

    def intermediate(self, images, blocks):
        b, c, h, w = images.shape
        pooled = images.mean(dim=(2, 3), keepdim=True).expand(b, c, h // 16, w // 16)
        return [pooled.contiguous() for _ in blocks]


def images(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(64, 32), mode="bilinear", align_corners=False)


def test_patch_targets_order_and_detail():
    x = torch.zeros(1, 3, 32, 16)
    x[:, :, 16:, :] = 1.0  # bottom row of patches white
    pixels, detail = patch_targets(x, 16)
    assert pixels.shape == (2, 3 * 256)
    assert pixels[0].max() == 0 and pixels[1].min() == 1  # row-major token order
    assert np.abs(detail).max() == 0  # flat patches carry no detail
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patch_targets(torch.zeros(1, 3, 30, 16), 16)


def test_held_out_r2_perfect_and_useless_features():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(200, 5))
    mixed = targets @ rng.normal(size=(5, 5))
    assert held_out_r2(mixed, targets, 100, alpha=1e-6) == pytest.approx(1, abs=1e-6)
    assert held_out_r2(rng.normal(size=(200, 5)), targets, 100, alpha=1e-6) < 0.1


def test_random_vit_keeps_patch_detail_pooled_tokens_do_not():
    torch.manual_seed(0)
    x = images()
    vit = token_locality(create_backbone("vit_tiny", (64, 32)), x, [0, -1], alpha=1.0)
    pooled = token_locality(PooledTokens(), x, [0], alpha=1.0)
    assert [r["block"] for r in vit] == [0, -1]
    assert min(r["pixel_r2"] for r in vit) > 0.9 and min(r["detail_r2"] for r in vit) > 0.8
    assert pooled[0]["detail_r2"] < 0.05 < vit[0]["detail_r2"]
    with pytest.raises(ValueError, match="at least 2 images"):
        token_locality(PooledTokens(), x[:1], [0])


class HeatmapTokens(nn.Module):
    """Tokens that *are* the target heatmap values of their patch (positive control), or fixed noise that is
    unrelated to the targets (negative control)."""

    reduction = 16

    def __init__(self, heatmaps_by_id, useless=False):
        super().__init__()
        self.heatmaps_by_id = heatmaps_by_id
        self.useless = useless

    def intermediate(self, images, blocks):
        key = round(float(images.sum()), 3)
        hm = self.heatmaps_by_id[key]
        b, k, h, w = hm.shape
        cells = hm.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 1, 4, 5, 2, 3)
        tokens = cells.reshape(b, k * 16, h // 4, w // 4)
        if self.useless:
            tokens = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(1))
        return [tokens for _ in blocks]


def heatmap_set(n, seed):
    """Images with arbitrary target heatmaps (values in every sub-cell, so no feature is constant)."""
    return images(n, seed), torch.rand(n, 2, 16, 8, generator=torch.Generator().manual_seed(seed + 10))


def test_heatmap_cell_targets_order():
    hm = torch.zeros(1, 1, 8, 4)
    hm[0, 0, 4, 0] = 1.0  # inside the second token row, first column, sub-cell (0, 0)
    targets = heatmap_cell_targets(hm, 4)
    assert targets.shape == (2, 16)
    assert targets[1, 0] == 1 and targets.sum() == 1
    with pytest.raises(ValueError, match="multiple of the cell size"):
        heatmap_cell_targets(torch.zeros(1, 1, 6, 4), 4)


def test_keypoint_locality_positive_and_negative_controls():
    train, test = heatmap_set(16, 0), heatmap_set(16, 1)
    by_id = {round(float(normalize(x).sum()), 3): hm for x, hm in (train, test)}
    perfect = keypoint_locality(HeatmapTokens(by_id), train, test, [0], alpha=1e-6)
    useless = keypoint_locality(HeatmapTokens(by_id, useless=True), train, test, [0], alpha=1.0)
    assert perfect[0]["r2"] == pytest.approx(1, abs=1e-4)
    assert useless[0]["r2"] < 0.05 and useless[0]["r2_3x3"] < 0.05
    vit = keypoint_locality(create_backbone("vit_tiny", (64, 32)), train, test, [0, -1])
    assert [r["block"] for r in vit] == [0, -1]
    assert all(np.isfinite([r["r2"], r["r2_3x3"]]).all() for r in vit)


def test_probe_backbones_seeded_random_row_and_block_table():
    first = probe_backbones("vit_tiny", (64, 32), [], seed=3)
    second = probe_backbones("vit_tiny", (64, 32), [], seed=3)
    assert list(first) == ["random"]
    assert all(torch.equal(a, b) for a, b in zip(first["random"].parameters(), second["random"].parameters(),
                                                 strict=True))
    table = block_table({"random": [{"r2": 0.5}, {"r2": 0.25}]}, [0, 11], "R²", lambda r: f"{r['r2']:.2f}")
    assert table.splitlines() == ["| backbone | block 0 R² | block 11 R² |", "|---|---|---|",
                                  "| random | 0.50 | 0.25 |"]
