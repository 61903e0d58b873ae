import torch

from saip_bench.pretrain.components.mae_decoder import (
    MAEDecoder,
    masked_patch_mse,
    masking_from_noise,
    patchify,
    random_masking,
    unpatchify,
)


def test_masking_counts_and_restore():
    ids_keep, ids_restore, mask = random_masking(3, 128, 0.75, torch.Generator().manual_seed(0))
    assert ids_keep.shape == (3, 32)
    assert mask.sum(1).tolist() == [96.0, 96.0, 96.0]
    kept_positions = torch.zeros(3, 128).scatter_(1, ids_keep, 1.0)
    torch.testing.assert_close(kept_positions, 1 - mask)
    shuffled = torch.cat([ids_keep, torch.zeros(3, 96, dtype=torch.long)], 1)
    restored = torch.gather(shuffled, 1, ids_restore)
    assert (restored[mask == 0] == torch.arange(128).expand(3, -1)[mask == 0]).all()


def test_masking_from_noise_keeps_lowest():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.2]])
    ids_keep, _, mask = masking_from_noise(noise, 2)
    assert ids_keep.tolist() == [[1, 3]]
    assert mask.tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_patchify_roundtrip_and_padding():
    images = torch.randn(2, 3, 32, 16)
    patches = patchify(images, 16)
    assert patches.shape == (2, 2, 768)
    torch.testing.assert_close(unpatchify(patches, (2, 1), 16), images)
    assert patchify(torch.randn(1, 3, 40, 20), 16).shape == (1, 6, 768)


def test_mse_only_on_masked_patches():
    images = torch.randn(1, 3, 32, 32)
    target = patchify(images, 16)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    pred = target.clone()
    pred[0, 0] += 10.0  # wrong only on patch 0
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # patch 0 visible
    assert masked_patch_mse(pred, images, mask, 16).item() < 1e-8
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(masked_patch_mse(pred, images, mask, 16), torch.tensor(50.0))


def test_decoder_shapes_params_any_grid():
    decoder = MAEDecoder(192, embed_dim=64, depth=2, num_heads=4, pos_grid=(16, 8), num_prefix=2)
    per_block = 12 * 64 * 64 + 13 * 64  # qkv+proj+mlp weights/biases + 2 norms
    expected = (192 * 64 + 64) + 64 + 64 * (2 + 128) + 2 * per_block + 2 * 64 + (64 * 768 + 768)
    assert sum(p.numel() for p in decoder.parameters()) == expected
    _, ids_restore, _ = random_masking(2, 200, 0.75)
    out = decoder(torch.randn(2, 2, 192), torch.randn(2, 50, 192), ids_restore, (20, 10))
    assert out.shape == (2, 200, 768)
