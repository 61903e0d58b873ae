import numpy as np
import pytest
import torch
from torch import nn

from saip_bench.backbones import create_backbone
from saip_bench.tasks.dense.locality import held_out_r2, patch_targets, token_locality


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
