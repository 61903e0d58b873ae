import pytest
import timm
import torch

from saip_bench.backbones import BACKBONES, count_parameters, create_backbone, flops

SIZES = [(256, 128), (128, 64), (224, 224), (320, 160), (112, 56)]


@pytest.fixture(scope="module", params=BACKBONES.names())
def backbone(request):
    return create_backbone(request.param).eval()


def test_parameter_counts_are_lightweight(backbone):
    assert 4.5e6 < count_parameters(backbone) < 6.0e6


def test_vit_tiny_matches_paper_size():
    backbone = create_backbone("vit_tiny")
    assert 5.5e6 <= count_parameters(backbone) <= 5.7e6
    body = backbone.body
    assert body.embed_dim == 192 and len(body.blocks) == 12 and body.blocks[0].attn.num_heads == 3


@pytest.mark.parametrize("size", SIZES)
def test_forward_features_any_size(backbone, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = backbone.forward_features(x)
    c = backbone.num_features
    assert out["cls"].shape == (2, c)
    h, w = out["fmap"].shape[-2:]
    assert out["fmap"].shape[:2] == (2, c)
    assert out["tokens"].shape == (2, h * w, c)
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
