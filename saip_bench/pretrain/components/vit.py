"""Token-level access to a timm ``VisionTransformer``: embed, run blocks 0..k, tap outputs, attention maps.

Why: SAIP and the MIM baselines need what ``forward_features`` hides: the output of an inner block (one
pass serves both the final CLS and the block-6 tokens), the last block's attention logits, and the
visible-token-only path of masked encoders. Everything uses timm's own modules, so the weights stay a
plain timm ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn


@dataclass
class TokenOutput:
    """Result of ``vit_forward``; ``tokens`` includes the prefix (CLS) token(s)."""

    tokens: torch.Tensor
    grid: tuple[int, int]
    taps: dict[int, torch.Tensor] = field(default_factory=dict)
    attn_qk: torch.Tensor | None = None  # (B, heads, N, N) logits of the last run block
    attn_vv: torch.Tensor | None = None


def num_prefix_tokens(body: nn.Module) -> int:
    return int(getattr(body, "num_prefix_tokens", 1))


def embed(body: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch-embed + position embedding (resampled to the grid) + prefix tokens; (B, P+N, C), grid."""
    x = body.patch_embed(images)
    if x.ndim == 4:  # dynamic_img_size: NHWC
        grid = (int(x.shape[1]), int(x.shape[2]))
    else:
        grid = tuple(body.patch_embed.grid_size)  # type: ignore[assignment]
    x = add_pos_embed(body, x)
    x = body.patch_drop(x)
    x = body.norm_pre(x)
    return x, grid


def add_pos_embed(body: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's ``VisionTransformer._pos_embed`` (prefix tokens + position embedding resampled to the grid of
    the NHWC patch tokens ``x``), with the resampling done by ``separable_resample`` inside a compiled step.

    Why: timm resamples with an antialiased bicubic ``F.interpolate``, whose backward has no shape function
    for sizes that vary (SAIP's rescaled views, traced as dynamic): the compiled step failed to build. The
    separable form is the same linear map, whose gradient is plain matrix products. Eager keeps timm's.
    """
    if not (torch.compiler.is_compiling() and x.ndim == 4 and body.pos_embed is not None):
        return body._pos_embed(x)
    batch, height, width, channels = x.shape
    prefix_tokens = [token.expand(batch, -1, -1) for token in (body.cls_token, body.reg_token)
                     if token is not None]
    in_pos = 0 if body.no_embed_class else body.num_prefix_tokens
    pos_embed = body.pos_embed
    old_grid = tuple(body.patch_embed.grid_size)
    if (height, width) != old_grid:
        grid_pos = pos_embed[:, in_pos:].reshape(1, *old_grid, -1)
        grid_pos = separable_resample(grid_pos, (height, width)).reshape(1, -1, pos_embed.shape[-1])
        pos_embed = torch.cat([pos_embed[:, :in_pos], grid_pos], dim=1)
    x = x.view(batch, -1, channels)
    if body.no_embed_class:
        x = torch.cat([*prefix_tokens, x + pos_embed], dim=1)
    else:
        x = torch.cat([*prefix_tokens, x], dim=1) + pos_embed
    return body.pos_drop(x)


@torch.library.custom_op("saip_bench::resample_weights", mutates_args=())
def resample_weights(old: int, new: int, device: torch.device) -> torch.Tensor:
    """(new, old) weights of 1-D antialiased bicubic resampling, as ``F.interpolate`` computes them: the
    rows of an identity resampled along the width (a constant, so no gradient flows through the
    interpolation). Two rows high: with one, torch's antialiased kernel returned a constant.

    Why an operator of its own: a compiled graph holds it as one opaque call whose size may stay symbolic
    (``new`` is a SymInt there), and it runs on concrete sizes only. Inline, the interpolation needs
    concrete sizes wherever the graph is replayed on fake tensors, which DDP's bucket split does: the
    compiled step then failed to build under DDP."""
    identity = torch.eye(old, device=device).view(old, 1, 1, old).expand(old, 1, 2, old)
    rows = F.interpolate(identity, size=(2, new), mode="bicubic", antialias=True, align_corners=False)
    return rows[:, 0, 0, :].t().contiguous()


@resample_weights.register_fake
def _resample_weights_shape(old: int, new: int, device: torch.device) -> torch.Tensor:
    return torch.empty(new, old, device=device)


def separable_resample(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (1, H, W, C) grid resampled to ``size`` by antialiased bicubic interpolation, one matrix per axis:
    timm's ``resample_abs_pos_embed`` up to float rounding (tests/pretrain/components/test_vit.py)."""
    rows = resample_weights(grid.shape[1], size[0], grid.device)
    cols = resample_weights(grid.shape[2], size[1], grid.device)
    out = torch.einsum("hi,bijc,wj->bhwc", rows, grid.float(), cols)
    return out.to(grid.dtype)


def attention_logits(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run one timm ``Block`` and return (output, qk logits, vv logits), both scaled by 1/sqrt(d).

    The block output still uses the fused attention kernel; only the two (B, h, N, N) logit maps are
    materialised, which is what the CSM attention term needs.
    """
    attn = block.attn
    y = block.norm1(x)
    batch, tokens, _ = y.shape
    qkv = attn.qkv(y).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v)
    qk = (q * attn.scale) @ k.transpose(-2, -1)
    vv = (v * attn.scale) @ v.transpose(-2, -1)
    out = out.transpose(1, 2).reshape(batch, tokens, attn.attn_dim)
    out = attn.proj(attn.norm(out))
    x = x + block.drop_path1(block.ls1(out))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, qk, vv


def run_blocks(
    body: nn.Module,
    x: torch.Tensor,
    start: int = 0,
    stop: int | None = None,
    taps: Sequence[int] = (),
    attn_maps: bool = False,
) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """Blocks ``start..stop-1``; ``taps`` records outputs (block index -> tokens, no norm)."""
    blocks = body.blocks
    stop = len(blocks) if stop is None else stop
    tapped: dict[int, torch.Tensor] = {}
    qk = vv = None
    for index in range(start, stop):
        if attn_maps and index == stop - 1:
            x, qk, vv = attention_logits(blocks[index], x)
        else:
            x = blocks[index](x)
        if index in taps:
            tapped[index] = x
    return x, tapped, qk, vv


def vit_forward(
    body: nn.Module,
    images: torch.Tensor,
    stop: int | None = None,
    taps: Sequence[int] = (),
    attn_maps: bool = False,
    final_norm: bool = True,
) -> TokenOutput:
    """Embed and run blocks ``0..stop-1`` (all by default); final norm only when all blocks ran."""
    x, grid = embed(body, images)
    x, tapped, qk, vv = run_blocks(body, x, 0, stop, taps, attn_maps)
    if final_norm and (stop is None or stop == len(body.blocks)):
        x = body.norm(x)
    return TokenOutput(x, grid, tapped, qk, vv)


def vit_forward_visible(
    body: nn.Module, images: torch.Tensor, ids_keep: torch.Tensor, stop: int | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """MAE-style encoder: embed, keep the prefix + the patch tokens ``ids_keep`` (B, K), run blocks."""
    x, grid = embed(body, images)
    prefix = num_prefix_tokens(body)
    patches = x[:, prefix:]
    kept = torch.gather(patches, 1, ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    x = torch.cat([x[:, :prefix], kept], dim=1)
    x, _, _, _ = run_blocks(body, x, 0, stop)
    if stop is None or stop == len(body.blocks):
        x = body.norm(x)
    return x, grid


def resize_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int
) -> torch.Tensor:
    """2-D (bicubic) resample of a (1, P+H*W, C) position embedding to another grid (timm helper)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    return resample_abs_pos_embed(
        pos_embed, new_size=list(new_grid), old_size=list(old_grid), num_prefix_tokens=num_prefix
    )
