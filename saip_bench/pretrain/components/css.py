"""The Cross-scale Search (CSS) decoder: find a query person in a multi-person canvas.

A dynamic-kernel mask head (docs/method.md#css-cross-scale-search): the query tokens (CLS first) go through
self-attention
blocks and the CLS becomes a kernel token; it cross-attends to the canvas tokens and is projected to a
dynamic kernel ``k``; a small conv head turns the canvas feature map into mask features ``G``; the mask
logits are ``k . G`` at every canvas cell. ``canvas_features`` is split out so two queries share ``G``.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention (queries attend to ``memory``) + MLP, both residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attn(self.norm_q(query), memory, memory, need_weights=False)
        query = query + attended
        return query + self.mlp(self.norm_mlp(query))


class CSSDecoder(nn.Module):
    def __init__(
        self,
        query_dim: int,
        canvas_dim: int,
        dim: int = 512,
        num_heads: int = 16,
        self_blocks: int = 2,
        conv_layers: int = 3,
    ) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, dim)
        self.self_blocks = nn.ModuleList([Block(dim, num_heads, qkv_bias=True) for _ in range(self_blocks)])
        self.memory_proj = nn.Linear(canvas_dim, dim)
        self.memory_norm = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttentionBlock(dim, num_heads)
        self.kernel_norm = nn.LayerNorm(dim, eps=1e-6)
        self.kernel_proj = nn.Linear(dim, dim)
        convs: list[nn.Module] = [nn.Conv2d(canvas_dim, dim, 1), nn.GELU()]
        for _ in range(conv_layers):
            convs += [nn.Conv2d(dim, dim, 3, padding=1), nn.GELU()]
        self.mask_head = nn.Sequential(*convs)
        # the canvas map reaches the convolutions channels-last (tokens_to_fmap's transpose), so under
        # bf16 autocast their weight gradients come out channels-last: weights in the same layout keep
        # DDP's reducer from warning "Grad strides do not match bucket view strides" on every rank (the
        # 1x1 kernel's gradient, whose strides differ only on its size-1 dimensions, autograd keeps as is)
        self.mask_head.to(memory_format=torch.channels_last)

    def canvas_features(self, canvas_fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory tokens (B, HW, D), mask features (B, D, H, W)) of the canvas map (B, C, H, W)."""
        memory = self.memory_norm(self.memory_proj(canvas_fmap.flatten(2).transpose(1, 2)))
        return memory, self.mask_head(canvas_fmap)

    def kernel(self, query_tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.query_proj(query_tokens)
        for block in self.self_blocks:
            x = block(x)
        token = self.cross(x[:, :1], memory)
        return self.kernel_proj(self.kernel_norm(token))[:, 0]

    def forward(
        self, query_tokens: torch.Tensor, memory: torch.Tensor, mask_features: torch.Tensor
    ) -> torch.Tensor:
        """Mask logits (B, H, W) of the query (B, 1+N, C_q; CLS first) in the canvas."""
        kernel = self.kernel(query_tokens, memory)
        return torch.einsum("bd,bdhw->bhw", kernel, mask_features.to(kernel.dtype))
