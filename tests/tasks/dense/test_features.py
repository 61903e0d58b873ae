import torch

from saip_bench.backbones import create_backbone
from saip_bench.tasks.base import set_final_norm
from saip_bench.tasks.dense.features import backbone_fingerprint, multi_level, unread_parameters


def test_final_norm_flag_feeds_dense_heads_through_the_final_layernorm():
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", img_size=(64, 32)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(backbone.body.norm.weight)  # a non-identity norm, so the test can tell
        images = torch.randn(2, 3, 64, 32)
        raw = multi_level(backbone, images, [11])[0]
        plain_key = backbone_fingerprint(backbone)
        set_final_norm(backbone, True)
        normed = multi_level(backbone, images, [11])[0]
        expected = backbone.body.norm(raw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(normed, expected, atol=1e-5) and not torch.allclose(normed, raw, atol=1e-3)
    assert backbone_fingerprint(backbone) != plain_key  # frozen-feature caches tell the two apart
    set_final_norm(backbone, False)
    with torch.no_grad():
        assert torch.equal(multi_level(backbone, images, [11])[0], raw)


def test_unread_parameters_are_those_the_levels_do_not_reach():
    """What DDP must be told (Task.leaves_parameters_unused): a ViT's final norm unless final_norm, blocks
    after the deepest level, TinyViT's head norm always; requires_grad and the mode are left as found."""
    vit = create_backbone("vit_tiny", (64, 48))
    vit.requires_grad_(False)
    assert unread_parameters(vit, [11]) == ["body.norm.weight", "body.norm.bias"]
    assert all(not p.requires_grad for p in vit.parameters()) and vit.training
    assert "body.blocks.11.attn.qkv.weight" in unread_parameters(vit, [5])
    set_final_norm(vit, True)
    assert unread_parameters(vit, [11]) == []
    tinyvit = create_backbone("tinyvit_5m", (64, 48))
    set_final_norm(tinyvit, True)  # a ViT-only flag: the hybrid's head norm is never read by its stages
    assert unread_parameters(tinyvit, [3]) == ["body.head.norm.weight", "body.head.norm.bias"]
