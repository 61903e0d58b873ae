"""Pluggable text encoders for text-to-image retrieval: ``scratch`` (default) and ``open_clip``.

A spec chooses one with ``params.text_encoder``: ``{type: scratch, width, layers, heads, max_length}``
or ``{type: open_clip, model: ViT-B-16, weights: /local/path/to/weights.pt}``. ``open_clip`` loads a
user's *local* CLIP weights through the open_clip package (installed by the user); nothing is ever
downloaded: a missing file or package is a UserError saying what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
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


class _OpenClipText(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids)


@TEXT_ENCODERS.register("open_clip")
def open_clip_text_side(
    captions: Sequence[str], model: str = "ViT-B-16", weights: str | None = None, **_: Any
) -> TextSide:
    """CLIP's text tower and BPE tokenizer from open_clip with local weights (IRRA's text encoder)."""
    if not weights or not Path(weights).expanduser().is_file():
        raise UserError(
            f"text_encoder open_clip needs 'weights': a local CLIP checkpoint file (got {weights!r}); "
            "saip-bench never downloads weights"
        )
    try:
        import open_clip
    except ImportError as exc:
        raise UserError(
            "text_encoder open_clip needs the open_clip package: pip install open_clip_torch"
        ) from exc
    clip_model = open_clip.create_model(model, pretrained=str(Path(weights).expanduser()))
    if hasattr(clip_model, "visual"):
        clip_model.visual = None  # the image side is the benchmarked backbone
    tokenizer = open_clip.get_tokenizer(model)
    width = (
        int(clip_model.text_projection.shape[1])
        if getattr(clip_model, "text_projection", None) is not None
        else int(clip_model.transformer.width)
    )
    return TextSide(
        lambda texts: tokenizer(list(texts)),
        _OpenClipText(clip_model),
        width,
        {"type": "open_clip", "model": model, "weights": str(weights)},
    )


def build_text_side(config: dict[str, Any] | str | None, captions: Sequence[str]) -> TextSide:
    """The text side named by a spec's ``text_encoder`` param (default: ``scratch``)."""
    if config is None or isinstance(config, str):
        config = {"type": config or "scratch"}
    config = dict(config)
    kind = config.pop("type", "scratch")
    return TEXT_ENCODERS.get(kind)(captions, **config)
