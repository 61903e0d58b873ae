"""IRRA's implicit relation reasoning: cross-modal masked language modelling (MLM).

Captions are masked BERT-style (``mask_tokens``); the masked caption's text-tower tokens attend over the
image tokens (one cross-attention layer), pass a few transformer layers and an MLM head that predicts
the original BPE ids at the masked positions (``CrossModalMLM``, ``mlm_loss``). The rates and layer
sizes are the recipe's (docs/tasks_single_person.md#text-to-image-retrieval).

Module names follow IRRA's, because the recipe's LR groups select parameters by name: ``cross_*``
weights and the ``mlm_head`` train at 5x the base LR (tasks/t2i_retrieval/*.yaml, ``schedule.groups``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

IGNORE = 0  # label of an unmasked position (id 0 is never a target: it is never masked)


@dataclass(frozen=True)
class MaskingRule:
    """Which caption tokens the MLM predicts and what replaces them (IRRA: 15 %, then 80/10/10)."""

    rate: float = 0.15  # share of candidate tokens chosen as targets
    mask: float = 0.8  # of the targets: replaced by <|mask|>
    random: float = 0.1  # of the targets: replaced by a random ordinary token; the rest keep their id

    def __post_init__(self) -> None:
        if not (0 < self.rate <= 1 and self.mask >= 0 and self.random >= 0 and self.mask + self.random <= 1):
            raise ValueError(f"masking rates must be 0 < rate <= 1, mask, random >= 0, mask + random <= 1: "
                             f"{self}")


def mask_tokens(
    ids: torch.Tensor,
    mask_id: int,
    rule: MaskingRule = MaskingRule(),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels) for a (B, L) batch of CLIP token ids, drawn on the CPU from ``generator``
    (None: torch's global one, which a resumed fit restores).

    Candidates are ordinary BPE tokens, ``0 < id < mask_id`` (not padding, ``<sot>``, ``<eot>`` nor the
    mask slot). Each is a target with probability ``rule.rate``; one uniform draw per token decides both
    (IRRA's rule). A caption that drew no target gets its first token masked, so every row has a target.
    Labels hold the original id at targets and ``IGNORE`` elsewhere.
    """
    ids = ids.to("cpu", torch.long)
    draw = torch.rand(ids.shape, generator=generator)
    candidate = (ids > 0) & (ids < mask_id)
    target = candidate & (draw < rule.rate)
    share = draw / rule.rate  # position inside the target interval, uniform on [0, 1) for targets
    random_ids = torch.randint(1, mask_id, ids.shape, generator=generator)
    masked = torch.where(target & (share < rule.mask), torch.full_like(ids, mask_id), ids)
    replaced = target & (share >= rule.mask) & (share < rule.mask + rule.random)
    masked = torch.where(replaced, random_ids, masked)
    labels = torch.where(target, ids, torch.full_like(ids, IGNORE))
    empty = ~target.any(1)
    if empty.any() and ids.shape[1] > 1:
        labels[empty, 1] = ids[empty, 1]
        masked[empty, 1] = mask_id
    return masked, labels


class CrossModalMLM(nn.Module):
    """Text tokens (queries) over image tokens (keys/values), ``depth`` transformer layers, MLM head."""

    def __init__(self, width: int, vocab_size: int, depth: int = 4, heads: int | None = None) -> None:
        super().__init__()
        from open_clip.transformer import QuickGELU, Transformer  # CLIP's blocks and activation, as IRRA

        heads = heads or max(1, width // 64)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_modal_transformer = Transformer(width, depth, heads, act_layer=QuickGELU, batch_first=True)
        self.ln_pre_t = nn.LayerNorm(width)
        self.ln_pre_i = nn.LayerNorm(width)
        self.ln_post = nn.LayerNorm(width)
        self.mlm_head = nn.Sequential(OrderedDict(
            dense=nn.Linear(width, width), gelu=QuickGELU(), ln=nn.LayerNorm(width),
            fc=nn.Linear(width, vocab_size),
        ))
        # IRRA's initialisation (CLIP's rule for its transformers)
        scale = width ** -0.5
        proj_std = scale * (2 * depth) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.cross_modal_transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=scale)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.cross_attn.in_proj_weight, std=scale)
        nn.init.normal_(self.cross_attn.out_proj.weight, std=proj_std)
        nn.init.normal_(self.mlm_head.dense.weight, std=fc_std)
        nn.init.normal_(self.mlm_head.fc.weight, std=proj_std)

    def forward(
        self, text_tokens: torch.Tensor, image_tokens: torch.Tensor, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits from (B, L, width) text tokens and (B, N, width) image tokens: (B, L, vocab), or
        (n, vocab) at n positions: where the (B, L) boolean ``select`` is true, or at the flat positions
        (``b * L + l``, ascending) of an integer ``select`` (``target_positions``: the same rows in the same
        order, found on the host, so a GPU's host does not wait for a mask index).

        Why ``select``: the head is per position and the loss reads only the targets, so predicting just
        those gives the same loss without a (B, L, 49408) tensor (about 2 GB at the recipe's batch).
        """
        image = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), image, image, need_weights=False)[0]
        x = self.ln_post(self.cross_modal_transformer(x))
        if select is not None:
            x = x[select] if select.dtype == torch.bool else x.flatten(0, 1).index_select(0, select)
        return self.mlm_head(x)


def target_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat positions ``b * L + l``, their ids) of the targets in (B, L) host ``labels`` (not
    ``IGNORE``), in row-major order: what ``x[labels != IGNORE]`` and ``labels[labels != IGNORE]`` select,
    found where the labels were drawn (on the host) rather than by a mask index on the device."""
    flat = labels.reshape(-1)
    positions = (flat != IGNORE).nonzero().squeeze(1)
    return positions, flat[positions]


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the target positions only (labels ``IGNORE`` elsewhere), averaged: IRRA's MLM
    term. ``logits`` (..., vocab) and ``labels`` (...) cover the same positions."""
    flat = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE)
