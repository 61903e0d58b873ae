import pytest
import torch

import saip_bench  # noqa: F401  (torchvision shim first)
from saip_bench.backbones import create_backbone
from saip_bench.pretrain.components.vit import (
    attention_logits,
    embed,
    resize_pos_embed,
    vit_forward,
    vit_forward_visible,
)


def _vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny", img_size=(64, 32)).body.eval()


def test_vit_forward_matches_timm_and_taps():
    body = _vit()
    images = torch.randn(2, 3, 64, 32)
    out = vit_forward(body, images, taps=(6,), attn_maps=True)
    assert out.grid == (4, 2)
    torch.testing.assert_close(out.tokens, body.forward_features(images), atol=1e-5, rtol=1e-5)
    assert out.taps[6].shape == (2, 9, 192)
    assert out.attn_qk.shape == (2, 3, 9, 9) and out.attn_vv.shape == (2, 3, 9, 9)
    partial = vit_forward(body, images, stop=7)
    torch.testing.assert_close(partial.tokens, out.taps[6])


def test_attention_logits_match_manual_softmax():
    body = _vit()
    x, _ = embed(body, torch.randn(2, 3, 64, 32))
    block = body.blocks[0]
    out, qk, _ = attention_logits(block, x)
    torch.testing.assert_close(out, block(x), atol=1e-5, rtol=1e-5)
    attn = block.attn
    q, k, _ = attn.qkv(block.norm1(x)).reshape(2, 9, 3, 3, 64).permute(2, 0, 3, 1, 4).unbind(0)
    manual = (q @ k.transpose(-2, -1)) / 8.0
    torch.testing.assert_close(qk, manual, atol=1e-5, rtol=1e-5)


def test_visible_tokens_with_all_ids_equals_full_forward():
    body = _vit()
    images = torch.randn(2, 3, 64, 32)
    ids = torch.arange(8).expand(2, -1)
    tokens, grid = vit_forward_visible(body, images, ids)
    torch.testing.assert_close(tokens, body.forward_features(images), atol=1e-5, rtol=1e-5)
    assert grid == (4, 2)
    kept, _ = vit_forward_visible(body, images, ids[:, :3], stop=7)
    assert kept.shape == (2, 4, 192)


def test_non_multiple_of_16_is_padded_to_ceil_grid():
    body = _vit()
    out = vit_forward(body, torch.randn(1, 3, 56, 28))
    assert out.grid == (4, 2) and out.tokens.shape == (1, 9, 192)


def test_resize_pos_embed_identity_and_new_grid():
    pos = torch.randn(1, 1 + 16 * 8, 4)
    assert resize_pos_embed(pos, (16, 8), (16, 8), 1) is pos
    resized = resize_pos_embed(pos, (16, 8), (20, 10), 1)
    assert resized.shape == (1, 201, 4)
    torch.testing.assert_close(resized[:, :1], pos[:, :1])


def test_separable_resample_is_timms_antialiased_bicubic():
    """The compiled step's position-embedding resample (vit.separable_resample) against timm's, down and
    up, including the one-row and one-column grids where torch's kernel needs care."""
    from timm.layers import resample_abs_pos_embed

    from saip_bench.pretrain.components.vit import separable_resample

    torch.manual_seed(0)
    pos = torch.randn(1, 16 * 8, 192)
    for size in [(6, 3), (7, 4), (9, 5), (10, 5), (16, 8), (20, 10), (1, 1), (2, 1), (1, 3)]:
        timm_pos = resample_abs_pos_embed(pos, new_size=list(size), old_size=[16, 8], num_prefix_tokens=0)
        ours = separable_resample(pos.reshape(1, 16, 8, 192), size).reshape(1, -1, 192)
        torch.testing.assert_close(ours, timm_pos, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("timm_kwargs", [{}, {"no_embed_class": True, "reg_tokens": 2}])
def test_compiled_embedding_is_timms(timm_kwargs):
    """Inside a compiled function ``embed`` adds the position embedding itself (vit.add_pos_embed); with
    and without an embedded class token and with register tokens it gives timm's tokens and gradients."""
    import timm

    torch.manual_seed(0)
    body = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=(64, 32),
                             dynamic_img_size=True, dynamic_img_pad=True, depth=1, **timm_kwargs)
    images = torch.randn(2, 3, 48, 40)  # another grid: the embedding is resampled
    eager_tokens, grid = embed(body, images)
    eager_tokens.square().sum().backward()
    eager_grad = body.pos_embed.grad.clone()
    body.zero_grad()
    compiled = torch.compile(lambda x: embed(body, x)[0], backend="eager", fullgraph=True)
    tokens = compiled(images)
    tokens.square().sum().backward()
    assert grid == (3, 3)
    torch.testing.assert_close(tokens, eager_tokens, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(body.pos_embed.grad, eager_grad, atol=2e-5, rtol=1e-4)
