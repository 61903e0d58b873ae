import functools

import pytest
import timm
import torch

from saip_bench.backbones import BACKBONES, count_parameters, create_backbone, flops

SIZES = [(256, 128), (128, 64), (224, 224), (320, 160), (112, 56)]


@functools.cache
def _cached(name):
    return create_backbone(name).eval()


@pytest.fixture(scope="module", params=BACKBONES.names())
def backbone(request):
    return _cached(request.param)


def _size_cases():
    """ViT-Tiny at every size the methods use; other families at a multiple of 32 and a size that is not."""
    for name in BACKBONES.names():
        family = BACKBONES.meta(name)["family"]
        for size in SIZES if family == "vit" else [(256, 128), (112, 56)]:
            yield pytest.param(name, size, id=f"{name}-{size[0]}x{size[1]}")


def test_parameter_counts_are_lightweight(backbone):
    assert 4.5e6 < count_parameters(backbone) < 6.0e6


def test_vit_tiny_matches_paper_size():
    backbone = create_backbone("vit_tiny")
    assert 5.5e6 <= count_parameters(backbone) <= 5.7e6
    body = backbone.body
    assert body.embed_dim == 192 and len(body.blocks) == 12 and body.blocks[0].attn.num_heads == 3


@pytest.mark.parametrize(("name", "size"), list(_size_cases()))
def test_forward_features_any_size(name, size):
    backbone = _cached(name)
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = backbone.forward_features(x)
    c = backbone.num_features
    assert out["cls"].shape == (1, c)
    h, w = out["fmap"].shape[-2:]
    assert out["fmap"].shape[:2] == (1, c)
    assert out["tokens"].shape == (1, h * w, c)
    assert (h, w) == backbone.grid_size(*size)
    assert torch.isfinite(out["cls"]).all()


def test_intermediate_levels(backbone):
    x = torch.rand(1, 3, 256, 128)
    with torch.no_grad():
        maps = backbone.intermediate(x, [0, backbone.depth - 1])
    assert len(maps) == 2 and all(m.ndim == 4 for m in maps)
    assert maps[-1].shape[1] == backbone.num_features


def test_export_loads_into_plain_timm(backbone):
    model = timm.create_model(backbone.timm_name, pretrained=False, **backbone.timm_kwargs)
    result = model.load_state_dict(backbone.export_state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_flops_positive_and_scale_with_input(backbone):
    small = flops(backbone, (128, 64))
    large = flops(backbone, (256, 128))
    assert 0 < small < large


def test_every_parameter_receives_a_gradient(backbone):
    """DDP without find_unused_parameters needs this (TinyViT's head norm feeds the global feature)."""
    backbone.train()
    backbone.zero_grad(set_to_none=True)
    out = backbone.forward_features(torch.rand(2, 3, 64, 32))
    (out["cls"].sum() + out["fmap"].mean()).backward()
    unused = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    backbone.eval()
    assert not unused
