"""MAE-style pieces: random masking, patchify, a light Transformer decoder, normalised-pixel MSE.

The decoder takes the encoder's visible tokens (plus any number of prefix tokens, e.g. CLS tokens),
re-inserts learnable mask tokens in grid order, adds a learnable position embedding resampled to the
current patch grid, and predicts the pixels of every patch. The loss is computed on removed patches only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from saip_bench.pretrain.components.vit import resize_pos_embed


def masking_from_noise(noise: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``keep`` lowest-noise patches of each row of ``noise`` (B, L).

    Returns ``ids_keep`` (B, keep), ``ids_restore`` (B, L) and ``mask`` (B, L) with 1 = removed.
    """
    batch, length = noise.shape
    if not 0 < keep <= length:
        raise ValueError(f"keep must be in 1..{length}, got {keep}")
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch, length, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, ids_restore, mask


def random_masking(
    batch: int,
    length: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniform random masking of ``mask_ratio`` of ``length`` patches (MAE); see ``masking_from_noise``."""
    keep = int(length * (1.0 - mask_ratio))
    noise = torch.rand(batch, length, generator=generator).to(device)
    return masking_from_noise(noise, max(1, keep))


def pad_to_multiple(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Zero-pad bottom/right to a multiple of ``patch`` (what timm's ``dynamic_img_pad`` does)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % patch, (-width) % patch
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    return images


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch*patch*C), row-major patches, pixel order (py, px, c) like MAE."""
    images = pad_to_multiple(images, patch)
    batch, channels, height, width = images.shape
    grid_h, grid_w = height // patch, width // patch
    x = images.reshape(batch, channels, grid_h, patch, grid_w, patch)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(batch, grid_h * grid_w, patch * patch * channels)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch: int, channels: int = 3) -> torch.Tensor:
    batch = patches.shape[0]
    x = patches.reshape(batch, grid[0], grid[1], patch, patch, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(batch, channels, grid[0] * patch, grid[1] * patch)


def masked_patch_mse(
    pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, patch: int, norm_pix: bool = True
) -> torch.Tensor:
    """MSE on removed patches only: ``sum_i m_i mean_c (pred_i - target_i)^2 / sum_i m_i`` (m=1 removed).

    With ``norm_pix`` each target patch is normalised by its own mean and variance (MAE, eps 1e-6).
    """
    target = patchify(images.float(), patch)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MAEDecoder(nn.Module):
    """Linear embed -> ``depth`` Transformer blocks -> LayerNorm -> per-patch pixel prediction.

    ``pos_grid`` is the grid the learnable position embedding is stored at; it is resampled (2-D bicubic)
    to the grid of each call. ``num_prefix`` prefix tokens (e.g. CLS) each get their own position vector.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        in_chans: int = 3,
        pos_grid: tuple[int, int] = (16, 8),
        num_prefix: int = 1,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.pos_grid = tuple(pos_grid)
        self.num_prefix = num_prefix
        self.embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_prefix + pos_grid[0] * pos_grid[1], embed_dim))
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.pred = nn.Linear(embed_dim, patch_size * patch_size * in_chans)
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self, prefix: torch.Tensor, visible: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """``prefix`` (B, P, C_in), ``visible`` (B, K, C_in) in kept order; returns (B, L, p*p*c)."""
        if prefix.shape[1] != self.num_prefix:
            raise ValueError(f"decoder expects {self.num_prefix} prefix tokens, got {prefix.shape[1]}")
        batch, length = ids_restore.shape
        if length != grid[0] * grid[1]:
            raise ValueError(f"ids_restore has {length} patches but the grid is {grid}")
        vis = self.embed(visible)
        mask_tokens = self.mask_token.to(vis.dtype).expand(batch, length - vis.shape[1], -1)
        full = torch.cat([vis, mask_tokens], dim=1)
        full = torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        x = torch.cat([self.embed(prefix), full], dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.pos_grid, grid, self.num_prefix).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.pred(self.norm(x))
        return x[:, self.num_prefix :]
