"""The simple pyramid's P2-P6 option: output strides from a ViT and from stages; the 3-level default."""

from __future__ import annotations

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.tasks.dense.features import level_channels, multi_level
from saip_bench.tasks.detection.pyramid import SimpleFeaturePyramid, pyramid_levels, pyramid_strides


def measured_strides(levels: dict[str, torch.Tensor], size: tuple[int, int]) -> list[tuple[int, int]]:
    return [(size[0] // v.shape[-2], size[1] // v.shape[-1]) for v in levels.values()]


@pytest.mark.parametrize("name", ["vit_tiny", "tinyvit_5m"])
@pytest.mark.parametrize("num_levels", [3, 5])
def test_output_strides_match_the_nominal_ones(name, num_levels):
    size = (128, 256)  # divisible by 64: every level's size is exact
    torch.manual_seed(0)
    backbone = create_backbone(name, size).eval()
    levels = pyramid_levels(backbone, num_levels)
    neck = SimpleFeaturePyramid(level_channels(backbone, levels, size), 8, backbone.family == "vit",
                                num_levels).eval()
    with torch.no_grad():
        out = neck(multi_level(backbone, torch.zeros(1, 3, *size), levels))
    strides = pyramid_strides(backbone, num_levels)
    assert [(s, s) for s in strides] == measured_strides(out, size)
    assert all(v.shape[1] == 8 for v in out.values())
    if num_levels == 5:
        assert strides == (4, 8, 16, 32, 64)
        assert list(out) == ["0", "1", "2", "3", "pool"]  # torchvision's FPN names (RoI heads pool 0-3)
    else:
        assert strides == (8, 16, 32)
        assert list(out) == ["0", "1", "2"]


def test_p2_p6_from_a_single_vit_map_and_from_four_stages():
    vit = SimpleFeaturePyramid([32], 16, single_scale=True, num_levels=5)
    out = vit([torch.randn(2, 32, 6, 10)])
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]
    stages = SimpleFeaturePyramid([8, 16, 32, 64], 16, single_scale=False, num_levels=5)
    maps = [torch.randn(1, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
    sizes = [tuple(v.shape[-2:]) for v in stages(maps).values()]
    assert sizes == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]


def test_the_default_stays_three_levels_and_bad_depths_are_refused():
    default = SimpleFeaturePyramid([32], 8, single_scale=True)
    assert default.num_levels == 3 and len(default([torch.randn(1, 32, 4, 4)])) == 3
    with pytest.raises(ValueError, match="num_levels"):
        SimpleFeaturePyramid([32], 8, single_scale=True, num_levels=4)
    with pytest.raises(ValueError, match="4 stage maps"):
        SimpleFeaturePyramid([8, 16, 32], 8, single_scale=False, num_levels=5)
