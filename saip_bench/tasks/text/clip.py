"""CLIP's text tower and BPE tokenizer through ``open_clip``, with weights from a local file.

Why open_clip: it maintains CLIP's text transformer and its BPE tokenizer (the IRRA recipe's text side,
docs/tasks_single_person.md#text-to-image-retrieval), so we build neither by hand. Why a local file only:
a benchmark run must not reach the network, and the weights are the user's to name. The file may be
OpenAI's TorchScript archive (``ViT-B-16.pt``, what IRRA loads), an open_clip checkpoint of the whole
model, or a state dict of the text tower alone (what the tests save); only the text-tower keys are read,
and every one of them must be present with the tower's shape.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saip_bench.errors import UserError

# Where a run finds the text-tower weights when the spec names none (keeps the protocol name unchanged).
CHECKPOINT_ENV = "SAIP_CLIP_TEXT_CHECKPOINT"
# Text-config fields a spec may change (tests build a small tower; the recipe keeps ViT-B/16's).
TEXT_CFG_FIELDS = ("context_length", "vocab_size", "width", "heads", "layers")
# Top-level names of a CLIP text tower's parameters: keys under these are the tower's, the rest
# (``visual.*``, ``logit_scale``, TorchScript's ``input_resolution``, ...) belong to other parts.
TOWER_PREFIXES = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise UserError(
            "text_encoder open_clip needs the open_clip package: pip install 'saip-bench[clip]' "
            "(or ./install.sh, which installs it)"
        ) from exc
    return open_clip


def text_tower_config(model: str, overrides: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
    """(embed_dim, text_cfg, quick_gelu) of open_clip's config ``model`` with ``overrides`` applied."""
    open_clip = _open_clip()
    config = open_clip.get_model_config(model)
    if config is None or "text_cfg" not in config:
        raise UserError(f"text_encoder open_clip: unknown model {model!r} (open_clip names such as "
                        "ViT-B-16-quickgelu)")
    unknown = sorted(set(overrides) - {*TEXT_CFG_FIELDS, "embed_dim"})
    if unknown:
        raise UserError(f"text_encoder open_clip: unknown field(s) {unknown}; allowed: model, checkpoint, "
                        f"embed_dim, {', '.join(TEXT_CFG_FIELDS)}")
    text_cfg = {**config["text_cfg"], **{k: int(v) for k, v in overrides.items() if k in TEXT_CFG_FIELDS}}
    embed_dim = int(overrides.get("embed_dim", config["embed_dim"]))
    return embed_dim, text_cfg, bool(config.get("quick_gelu", False))


def build_text_tower(model: str = "ViT-B-16-quickgelu", **overrides: Any) -> nn.Module:
    """A randomly initialised open_clip ``TextTransformer`` of ``model`` (fields in ``overrides`` win)."""
    from open_clip.model import _build_text_tower

    embed_dim, text_cfg, quick_gelu = text_tower_config(model, overrides)
    return _build_text_tower(embed_dim, text_cfg, quick_gelu=quick_gelu)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a plain/wrapped state dict, safetensors, or a TorchScript archive."""
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(str(path))
    except Exception as first:  # a TorchScript archive fails torch.load(weights_only=True)
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:  # neither reader understands the file: say so, naming it
            raise UserError(f"{path}: not a readable CLIP checkpoint (a state dict, safetensors or "
                            f"OpenAI's TorchScript archive): {first}") from first
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{path}: expected a state dict (parameter name -> tensor), found "
                        f"{type(state).__name__}")
    return dict(state)


def text_tower_state(state: dict[str, Any]) -> dict[str, Any]:
    """The text-tower keys of a checkpoint, named as open_clip's ``TextTransformer`` names them: a
    ``text.`` prefix (open_clip's custom-text models) is removed; other parts are left out."""
    if any(key.startswith("text.") for key in state):
        state = {key[len("text."):]: value for key, value in state.items() if key.startswith("text.")}
    return {key: value for key, value in state.items() if key.split(".", 1)[0] in TOWER_PREFIXES}


def load_text_tower(tower: nn.Module, path: Path, model: str) -> str:
    """Load ``path``'s text-tower weights into ``tower`` strictly; return the file's sha256 (16 hex).

    A missing key, an extra tower key or a shape that differs is an error naming the file and the key:
    a checkpoint of another CLIP (or another text config) must not half-load.
    """
    found = text_tower_state(read_checkpoint(path))
    if not found:
        raise UserError(f"{path}: no CLIP text-tower keys (expected e.g. 'token_embedding.weight', "
                        f"'transformer.resblocks.0.attn.in_proj_weight'); is it a CLIP checkpoint?")
    expected = tower.state_dict()
    for key, value in expected.items():
        if key not in found:
            raise UserError(f"{path}: missing key {key!r} of the {model} text tower "
                            f"({len(expected)} keys expected, {len(found)} text-tower keys found)")
        shape = tuple(getattr(found[key], "shape", ()))
        if shape != tuple(value.shape):
            raise UserError(f"{path}: key {key!r} has shape {list(shape)}, the {model} text tower "
                            f"(text_encoder fields) expects {list(value.shape)}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise UserError(f"{path}: unexpected key {extra[0]!r} for the {model} text tower "
                        f"({len(extra)} extra text-tower keys: more layers than configured?)")
    tower.load_state_dict({key: found[key] for key in expected}, strict=True)
    return file_digest(path)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def resolve_checkpoint(checkpoint: str | None) -> Path:
    """The spec's ``checkpoint`` (else ``$SAIP_CLIP_TEXT_CHECKPOINT``) as an existing file."""
    value = checkpoint or os.environ.get(CHECKPOINT_ENV, "").strip() or None
    if value is None:
        raise UserError(
            "text_encoder open_clip needs a local CLIP checkpoint file: set "
            f"{CHECKPOINT_ENV}=/path/to/ViT-B-16.pt or --cfg-options "
            "protocols.finetune.params.head.text_encoder.checkpoint=/path/to/ViT-B-16.pt; "
            "saip-bench never downloads weights"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: CLIP text checkpoint file not found (text_encoder.checkpoint or "
                        f"{CHECKPOINT_ENV}); saip-bench never downloads weights")
    return path


class ClipTokenizer:
    """open_clip's BPE tokenizer for ``model``: ``<sot> bpe... <eot>`` zero-padded to the context length,
    truncated with ``<eot>`` kept last (IRRA's rule too). IRRA's ``<|mask|>`` id is ``vocab - 3``."""

    def __init__(self, model: str, context_length: int) -> None:
        self.tokenizer = _open_clip().get_tokenizer(model, context_length=context_length)
        self.context_length = int(context_length)
        self.vocab_size = int(self.tokenizer.vocab_size)
        self.sot_id = int(self.tokenizer.sot_token_id)
        self.eot_id = int(self.tokenizer.eot_token_id)
        # IRRA drops the last BPE merge and puts <|mask|> in its slot, so ids keep CLIP's 49408 rows
        self.mask_id = self.vocab_size - 3

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(captions))


class ClipTextEncoder(nn.Module):
    """A CLIP text tower: ``forward`` gives the projected ``<eot>`` feature (CLIP's and IRRA's text
    embedding); ``forward_tokens`` every position projected as well (IRRA's MLM reads them)."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower
        self.tower.output_tokens = True

    def forward_tokens(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.tower(ids)
        projection = self.tower.text_projection
        if projection is not None:
            tokens = projection(tokens) if isinstance(projection, nn.Linear) else tokens @ projection
        return pooled, tokens

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(ids)[0]
