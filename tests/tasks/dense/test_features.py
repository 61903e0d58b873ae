import torch

from saip_bench.backbones import create_backbone
from saip_bench.tasks.base import set_final_norm
from saip_bench.tasks.dense.features import backbone_fingerprint, multi_level


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
