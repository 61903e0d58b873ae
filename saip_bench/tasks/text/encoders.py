"""Pluggable text encoders for text-to-image retrieval: ``scratch`` (default) and ``open_clip``.

A spec chooses one with ``params.text_encoder``: ``{type: scratch, width, layers, heads, max_length}``
(the labelled CPU protocol's word-vocabulary transformer, trained from scratch) or ``{type: open_clip,
model: ViT-B-16-quickgelu, checkpoint: /local/ViT-B-16.pt}`` (the IRRA recipe's CLIP text tower and BPE
tokenizer, ``saip_bench.tasks.text.clip``). Nothing is ever downloaded: a missing file, a mismatched
checkpoint or a missing package is a UserError saying what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from saip_bench.errors import UserError
from saip_bench.registry import Registry
from saip_bench.tasks.text.tokenizer import EOS, PAD, WordTokenizer

TEXT_ENCODERS: Registry[Callable[..., TextSide]] = Registry("text encoder")


@dataclass
class TextSide:
    """A tokenizer (captions -> ids) and an encoder (ids -> (B, width) features)."""

    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    encoder: nn.Module
    width: int
    description: dict[str, Any]
    mask_id: int | None = None  # the MLM mask id of the tokenizer; None: no masked language modelling
    vocab_size: int | None = None  # how many ids the MLM head predicts
    projected: bool = False  # the features already are the joint embedding (CLIP's text projection)


class ScratchTextTransformer(nn.Module):
    """A small pre-norm transformer over word ids; the feature is the final-norm output at ``<eos>``
    (CLIP's choice), so padding never changes it (padding is masked)."""

    def __init__(
        self, vocab_size: int, max_length: int, width: int = 256, layers: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.position_embedding = nn.Parameter(torch.zeros(max_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=4 * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.width = width

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        x = self.transformer(x, src_key_padding_mask=ids == PAD)
        x = self.final_norm(x)
        eos = (ids == EOS).float().argmax(1)
        return x[torch.arange(ids.shape[0], device=ids.device), eos]


@TEXT_ENCODERS.register("scratch")
def scratch_text_side(
    captions: Sequence[str],
    max_length: int = 77,
    width: int = 256,
    layers: int = 2,
    heads: int = 4,
    min_count: int = 1,
    **_: Any,
) -> TextSide:
    tokenizer = WordTokenizer.from_captions(captions, max_length=max_length, min_count=min_count)
    encoder = ScratchTextTransformer(len(tokenizer), max_length, width, layers, heads)
    description = {
        "type": "scratch",
        "vocab_size": len(tokenizer),
        "max_length": max_length,
        "width": width,
        "layers": layers,
        "heads": heads,
    }
    return TextSide(tokenizer, encoder, width, description)


@TEXT_ENCODERS.register("open_clip")
def open_clip_text_side(
    captions: Sequence[str], model: str = "ViT-B-16-quickgelu", checkpoint: str | None = None, **fields: Any
) -> TextSide:
    """CLIP's text tower and BPE tokenizer through open_clip, weights from a local file (IRRA's text side).

    ``fields`` change the open_clip text config (``width``, ``layers``, ``heads``, ``context_length``,
    ``vocab_size``, ``embed_dim``); the checkpoint must match the resulting tower key by key.
    """
    from saip_bench.tasks.text.clip import (
        ClipTextEncoder,
        ClipTokenizer,
        build_text_tower,
        load_text_tower,
        resolve_checkpoint,
    )

    path = resolve_checkpoint(checkpoint)
    tower = build_text_tower(model, **fields)
    digest = load_text_tower(tower, path, model)
    tokenizer = ClipTokenizer(model, tower.context_length)
    if tower.vocab_size < tokenizer.vocab_size:
        raise UserError(f"text_encoder open_clip: vocab_size {tower.vocab_size} is smaller than the BPE "
                        f"tokenizer's {tokenizer.vocab_size} ids")
    width = int(tower.output_dim or tower.width)
    description = {"type": "open_clip", "model": model, "checkpoint": str(path), "checkpoint_sha256": digest,
                   "context_length": tower.context_length, "width": width, **fields}
    return TextSide(tokenizer, ClipTextEncoder(tower), width, description, mask_id=tokenizer.mask_id,
                    vocab_size=tower.vocab_size, projected=True)


def build_text_side(config: dict[str, Any] | str | None, captions: Sequence[str]) -> TextSide:
    """The text side named by a spec's ``text_encoder`` param (default: ``scratch``)."""
    if config is None or isinstance(config, str):
        config = {"type": config or "scratch"}
    config = dict(config)
    kind = config.pop("type", "scratch")
    return TEXT_ENCODERS.get(kind)(captions, **config)
