"""CE2P head: output stride 4 for ViT and pyramid inputs; the new LayerNorms hook in only for a call."""

from __future__ import annotations

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.specs import get_task_spec
from saip_bench.tasks.dense.ce2p import CE2PHead, CE2POutput
from saip_bench.tasks.parsing import ParsingModel, SegmentationTask

SMALL = {"channels": 16, "context_channels": 16, "low_channels": 8, "edge_channels": 8}


@pytest.mark.parametrize("upsample", ["bilinear", "deconv"])
def test_stride_16_levels_decode_at_stride_4(upsample):
    head = CE2PHead([8, 8, 8], num_classes=5, low_stride=16, low_upsample=upsample, **SMALL).eval()
    maps = [torch.randn(2, 8, 6, 4) for _ in range(3)]  # a 96x64 input seen at stride 16
    out = head(maps)
    assert isinstance(out, CE2POutput)
    assert out.fused.shape == out.parsing.shape == (2, 5, 24, 16) and out.edge.shape == (2, 2, 24, 16)


def test_pyramid_levels_decode_at_stride_4():
    head = CE2PHead([8, 16, 32], num_classes=5, low_stride=4, **SMALL).eval()
    out = head([torch.randn(1, 8, 24, 16), torch.randn(1, 16, 12, 8), torch.randn(1, 32, 3, 2)])
    assert out.fused.shape == (1, 5, 24, 16)


@pytest.fixture(scope="module")
def vit_model():
    spec = get_task_spec("parsing", "lip").model_copy(deep=True)
    spec.protocols["finetune"].params["head"].update(SMALL)
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", (64, 48))
    params = {**spec.head.params, **spec.protocols["finetune"].params["head"]}
    head, levels = SegmentationTask._ce2p_head(backbone, spec, "finetune", params, 20)
    return backbone, ParsingModel(head, levels, [str(i) for i in range(20)], [[14, 15], [16, 17], [18, 19]])


def test_the_paper_head_reads_blocks_4_8_12_and_predicts_at_stride_4(vit_model):
    backbone, model = vit_model
    assert model.levels == [3, 7, 11] and model.output_stride == 4
    model.eval()
    with torch.no_grad():
        logits = model.logits(backbone, torch.rand(2, 3, 64, 48))
    assert logits.shape == (2, 20, 16, 12)  # H/4 x W/4


def test_new_layernorms_replace_the_residual_stream_only_during_the_call(vit_model):
    backbone, model = vit_model
    backbone.eval()
    model.eval()
    images = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        plain_before = backbone.intermediate(images, [11])[0]
        for norm in model.head.token_norms:  # make the new norms visibly different from identity
            norm.weight.fill_(2.0)
        hooked = model.features(backbone, images)
        plain_after = backbone.intermediate(images, [11])[0]
        plain_8 = backbone.intermediate(images, [7])[0]
        norm_8 = model.head.token_norms[1]
        only_normed = norm_8(plain_8.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(plain_8.shape)
    assert torch.equal(plain_before, plain_after)  # no hook left behind on the backbone
    assert not any(block._forward_hooks for block in backbone.body.blocks)
    # block 8 saw block 4's new norm (the residual stream was replaced), not only its own norm on top
    assert not torch.allclose(hooked[1], only_normed, atol=1e-3)
    assert not torch.allclose(hooked[2], plain_before, atol=1e-3)
    model.train()
    loss = model.logits(backbone, images.expand(2, -1, -1, -1)).square().mean()
    loss.backward()
    assert all(norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
               for norm in model.head.token_norms)


def test_a_stage_pyramid_feeds_its_stride_4_8_and_last_stages():
    spec = get_task_spec("parsing", "lip")
    params = {**spec.head.params, **spec.protocols["finetune"].params["head"], **SMALL}
    backbone = create_backbone("starnet_s3", (64, 48)).eval()
    head, levels = SegmentationTask._ce2p_head(backbone, spec, "finetune", params, 20)
    assert levels == [0, 1, 3] and head.token_norms is None  # the new LayerNorms are for ViT blocks
    model = ParsingModel(head, levels, [str(i) for i in range(20)], []).eval()
    with torch.no_grad():
        assert model.logits(backbone, torch.rand(1, 3, 64, 48)).shape == (1, 20, 16, 12)
