"""Published checkpoints (timm, safetensors, plain PyTorch, MAE / HAP / PATH releases) in our backbones.

Why: comparing with a released model (an ImageNet DeiT-Tiny from timm, MAE, HAP, PATH) or starting a
pretraining from one must not need a hand-written sidecar. ``load_external`` unwraps the file
(``state_dict_ema`` / ``model_ema`` / ``state_dict`` / ``model`` / ``module`` / ``teacher``), strips
prefixes (``module.``, ``model.``, PATH's ``backbone_module.`` / ``backbone.``, ``encoder.``), drops what
is not backbone (MAE/HAP ``decoder_*`` + ``mask_token``, classifier heads, DeiT's ``dist_token``),
resamples the position embedding to the backbone's grid, and loads with ``strict=False``, returning a
``MappingReport`` of what was dropped / missing / unexpected. A checkpoint of another architecture
(shape mismatches, or essential keys absent) is refused with the file named and the keys listed.

Layouts that map to no backbone here: SOLIDER's release is a Swin Transformer (``layers.N.blocks.M``,
``relative_position_bias_table``, ``semantic_embed_*``); saip-bench has no Swin backbone, so those files
are refused with that reason (pretrain ``--method solider`` here instead).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from saip_bench.backbones import BACKBONES, Backbone, create_backbone
from saip_bench.errors import DataFormatError

WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "teacher")
# stripped when every key has it; BACKBONE_PREFIXES also when only some keys have it (the rest is dropped)
PREFIXES = ("module.", "model.", "_orig_mod.")
BACKBONE_PREFIXES = ("backbone_module.", "backbone.", "encoder.")
DROP = re.compile(r"^(decoder_|decoder\.|mask_token$|dist_token$|head_dist\.|head\.(weight|bias)$"
                  r"|head\.fc\.|fc\.(weight|bias)$|pose_|norm_pix)")
OPTIONAL = re.compile(r"^(cls_token|reg_token|norm\.|fc_norm\.|head\.norm\.)")
LIST_AT_MOST = 30


class ArchitectureMismatch(DataFormatError):
    """A checkpoint whose tensors do not fit the backbone (names every mismatched / missing key)."""


@dataclass
class MappingReport:
    """How a checkpoint's keys became the backbone's: recorded in sidecars and records' provenance."""

    backbone: str
    layout: str = "plain"  # plain | timm | mae-style (MAE, HAP) | path | saip
    wrapper: str | None = None
    prefixes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: dict[str, list[list[int]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"layout {self.layout}"]
        if self.wrapper:
            parts.append(f"wrapper {self.wrapper!r}")
        if self.prefixes:
            parts.append(f"prefixes stripped {self.prefixes}")
        parts.append(f"{len(self.dropped)} dropped, {len(self.missing)} missing {_short(self.missing)}, "
                     f"{len(self.unexpected)} unexpected {_short(self.unexpected)}")
        for name, (old, new) in self.resized.items():
            parts.append(f"{name} resampled {old} -> {new}")
        return "; ".join(parts)


def _short(keys: list[str]) -> str:
    if not keys:
        return "[]"
    head = ", ".join(keys[:LIST_AT_MOST])
    return f"[{head}{f', ... {len(keys) - LIST_AT_MOST} more' if len(keys) > LIST_AT_MOST else ''}]"


def read_checkpoint(path: str | Path) -> Any:
    """The file's object: safetensors as a dict, else ``torch.load`` with ``weights_only`` (an MAE/HAP
    training checkpoint's ``args`` Namespace is allowed; other pickled code is refused, never run)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "a checkpoint file", "nothing at that path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / torch raise many types on corrupt or unsafe files
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataFormatError(path, "a safetensors, timm or PyTorch checkpoint holding tensors",
                              f"{type(exc).__name__}: {first}") from exc


def unwrap(obj: Any, path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside known wrappers (EMA first, as timm evaluates), and the wrapper path."""
    chain: list[str] = []
    while isinstance(obj, Mapping):
        inner = next((k for k in WRAPPERS if isinstance(obj.get(k), Mapping) and obj.get(k)), None)
        if inner is None:
            break
        chain.append(inner)
        obj = obj[inner]
    if not isinstance(obj, Mapping):
        raise DataFormatError(path, "a state dict (a mapping of names to tensors)", type(obj).__name__)
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise DataFormatError(path, "a state dict (a mapping of names to tensors)",
                              f"no tensors; top-level keys {sorted(map(str, obj))[:LIST_AT_MOST]}")
    return state, "/".join(chain) or None


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    return unwrap(read_checkpoint(path), path)


def _strip_prefixes(state: dict[str, torch.Tensor], report: MappingReport) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES + BACKBONE_PREFIXES:
            hits = [k for k in state if k.startswith(prefix)]
            if not hits or (len(hits) < len(state) and prefix not in BACKBONE_PREFIXES):
                continue
            report.dropped += [k for k in state if not k.startswith(prefix)]
            state = {k[len(prefix):]: state[k] for k in hits}
            report.prefixes.append(prefix)
            changed = True
    return state


def _refuse_unsupported_layout(keys: list[str], path: str | Path) -> None:
    if any("relative_position_bias_table" in k for k in keys) and any(k.startswith("layers.") for k in keys):
        solider = " (SOLIDER's released layout: semantic_embed_*)" if any(
            k.startswith("semantic_embed") for k in keys) else ""
        raise ArchitectureMismatch(
            path, f"weights of a backbone saip-bench supports ({', '.join(BACKBONES.names())})",
            f"a Swin Transformer checkpoint{solider}: layers.N.blocks.M.*, relative_position_bias_table. No "
            "backbone here is a Swin, so these weights map to none of them; pretrain `--method solider` on a "
            "supported backbone instead",
        )


def _layout(keys: list[str], report: MappingReport) -> str:
    if any(k.startswith(("decoder_", "mask_token")) for k in keys):
        return "mae-style (MAE, HAP)"
    if any(p in ("backbone_module.", "backbone.") for p in report.prefixes):
        return "path"
    if report.wrapper and "state_dict" in report.wrapper:
        return "timm"
    return "plain"


def _grid(tokens: int, target: tuple[int, int]) -> tuple[int, int] | None:
    """The grid of a position embedding with ``tokens`` patch positions: the target's, square or 2:1."""
    if tokens == target[0] * target[1]:
        return target
    side = math.isqrt(tokens)
    if side * side == tokens:
        return side, side
    half = math.isqrt(tokens // 2)
    if 2 * half * half == tokens:
        return 2 * half, half
    return None


def _fit_pos_embed(state: dict[str, torch.Tensor], backbone: Backbone, had_dist: bool,
                   report: MappingReport) -> None:
    pos = state.get("pos_embed")
    target = backbone.body.state_dict().get("pos_embed")
    if pos is None or target is None or pos.shape == target.shape:
        return
    if pos.dim() != 3 or pos.shape[-1] != target.shape[-1]:
        return
    prefix = int(getattr(backbone.body, "num_prefix_tokens", 1))
    if had_dist and pos.shape[1] > prefix:  # DeiT distilled: cls, dist, patches -> drop the dist position
        pos = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
    grid_new = tuple(int(s) for s in backbone.body.patch_embed.grid_size)
    grid_old = _grid(int(pos.shape[1]) - prefix, grid_new)  # type: ignore[arg-type]
    if grid_old is None:
        return  # left mismatched: refused below with the shapes named
    from saip_bench.pretrain.components.vit import resize_pos_embed

    state["pos_embed"] = resize_pos_embed(pos, grid_old, grid_new, prefix)  # type: ignore[arg-type]
    if grid_old != grid_new:
        report.resized["pos_embed"] = [list(grid_old), list(grid_new)]


def map_state_dict(state: dict[str, torch.Tensor], backbone: Backbone, path: str | Path,
                   wrapper: str | None = None) -> tuple[dict[str, torch.Tensor], MappingReport]:
    """Remap ``state`` to ``backbone.body``'s keys; refuses a checkpoint of another architecture."""
    report = MappingReport(backbone=backbone.name, wrapper=wrapper)
    _refuse_unsupported_layout(list(state), path)
    state = _strip_prefixes(dict(state), report)
    _refuse_unsupported_layout(list(state), path)
    report.layout = _layout(list(state), report)
    target = backbone.body.state_dict()
    had_dist = "dist_token" in state
    for key in list(state):
        if key not in target and DROP.match(key):
            report.dropped.append(key)
            del state[key]
    _fit_pos_embed(state, backbone, had_dist, report)
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs {backbone.name} {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    report.missing = [k for k in target if k not in state]
    report.unexpected = [k for k in state if k not in target]
    essential = [k for k in report.missing if not OPTIONAL.match(k)]
    if mismatched or essential:
        raise ArchitectureMismatch(
            path, f"weights of {backbone.name} ({backbone.timm_name})",
            f"another architecture: {len(mismatched)} shape mismatches {_short(mismatched)}; "
            f"{len(essential)} essential keys missing {_short(essential)}; "
            f"{len(report.unexpected)} unexpected {_short(report.unexpected)} (layout {report.layout})",
        )
    return {k: v for k, v in state.items() if k in target}, report


def load_external_into(backbone: Backbone, path: str | Path) -> MappingReport:
    """Load a published checkpoint into ``backbone`` in place (finite weights only); the report."""
    from saip_bench.pretrain.export import check_finite_weights

    raw, wrapper = read_state_dict(path)
    state, report = map_state_dict(raw, backbone, path, wrapper)
    check_finite_weights(state, path)
    backbone.body.load_state_dict(state, strict=False)
    return report


def guess_backbone(path: str | Path) -> str:
    """The registered backbone the checkpoint fits (tried in registry order); else every refusal."""
    raw, wrapper = read_state_dict(path)
    reasons = []
    for name in BACKBONES.names():
        try:
            map_state_dict(dict(raw), create_backbone(name), path, wrapper)
            return name
        except ArchitectureMismatch as exc:
            if "Swin" in str(exc):
                raise
            reasons.append(f"{name}: {exc.found}")
    raise ArchitectureMismatch(path, f"weights of a supported backbone ({', '.join(BACKBONES.names())})",
                               "none fits; " + " | ".join(reasons))


def load_external(path: str | Path, backbone: str | None = None,
                  img_size: tuple[int, int] = (256, 128)) -> tuple[Backbone, MappingReport]:
    """A fresh registered backbone (``backbone`` or the one the file fits) with the file's weights."""
    name = backbone or guess_backbone(path)
    net = create_backbone(name, img_size=tuple(img_size))
    return net, load_external_into(net, path)


def external_method_name(path: str | Path) -> str:
    """A record-safe method name for a published file: its stem (``deit_tiny_patch16_224-a1311bcf``)."""
    name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem))  # "__" splits unit ids
    return name.strip("_.") or "external"


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is a saip-bench export (a JSON sidecar beside it, or our safetensors header
    ``format: saip-bench-backbone``) rather than a published checkpoint to remap."""
    from saip_bench.pretrain.export import sidecar_path

    path = Path(path)
    if path.suffix != ".safetensors":
        return False
    if sidecar_path(path).is_file():
        return True
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == "saip-bench-backbone"
    except Exception:  # unreadable: the loader names the problem
        return False


def convert_external(path: str | Path, out_path: str | Path, backbone: str | None = None,
                     meta: dict[str, Any] | None = None) -> tuple[Path, MappingReport]:
    """Write a published checkpoint as a saip-bench export (safetensors + sidecar naming its source),
    so the loaders, caches and ``timm`` users downstream see one format."""
    from saip_bench.bench.checkpoints import weights_hash
    from saip_bench.pretrain.export import save_backbone

    net, report = load_external(path, backbone)
    source = {"path": str(Path(path).resolve()), "weights_hash": weights_hash(path),
              "mapping": report.as_dict()}
    out = save_backbone(net, out_path, {"method": "external", "external": source, **(meta or {})})
    return out, report
