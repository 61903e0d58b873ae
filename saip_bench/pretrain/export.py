"""Pretrained backbones as plain timm ``state_dict`` safetensors + a JSON sidecar.

``save_backbone(backbone, "x.safetensors", meta)`` writes ``x.safetensors`` and ``x.json``; the sidecar
names the registered backbone, the timm model name and kwargs (so ``timm.create_model(timm_name,
**timm_kwargs)`` + ``load_state_dict`` works with no missing/unexpected keys), the input size, the
method, the step, the config hash and the hyper-parameters. ``load_backbone`` gives back a ``Backbone``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from saip_bench.backbones import Backbone, count_parameters, create_backbone
from saip_bench.errors import DataFormatError
from saip_bench.utils import atomic_write_json, file_sha256, umask_mode

FORMAT_VERSION = 1


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_backbone(backbone: Backbone, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the backbone weights (atomically: temp file + rename) and the sidecar; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in backbone.export_state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={"format": "saip-bench-backbone", "version": str(FORMAT_VERSION)})
    os.chmod(tmp, umask_mode())  # safetensors creates it 0600: shared result folders could not read it
    tmp.replace(path)
    sidecar = {
        "format_version": FORMAT_VERSION,
        "arch": backbone.name,
        "family": backbone.family,
        "timm_name": backbone.timm_name,
        "timm_kwargs": backbone.timm_kwargs,
        "img_size": list(backbone.img_size),
        "patch_size": backbone.reduction if backbone.family == "vit" else None,
        "num_features": backbone.num_features,
        "params": count_parameters(backbone),
        "weights_sha256": file_sha256(path),
        **(meta or {}),
    }
    atomic_write_json(sidecar_path(path), sidecar)
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    side = sidecar_path(path)
    try:
        return json.loads(side.read_text())
    except FileNotFoundError as exc:
        raise DataFormatError(
            side, "the JSON sidecar written next to the backbone weights", "missing"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(side, "a JSON object", str(exc)) from exc


def check_finite_weights(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or inf, naming the file and the first such tensor and index.

    Why at load: a diverged checkpoint otherwise runs a whole unit and ends in a raw FloatingPointError
    (or scores garbage) far from its cause.
    """
    for name, tensor in state.items():
        if not tensor.is_floating_point() and not tensor.is_complex():
            continue
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0]) if tensor.dim() else ()
            value = tensor[first].item() if first else tensor.item()
            raise DataFormatError(
                path, "finite weights (a checkpoint of a diverged training?)",
                f"tensor {name!r} {tuple(tensor.shape)} holds {int(bad.sum())} non-finite values, the first "
                f"{value} at index {first}",
            )


def load_backbone(path: str | Path, img_size: tuple[int, int] | None = None) -> Backbone:
    """Rebuild the registered backbone named in the sidecar and load the weights (strict)."""
    path = Path(path)
    meta = read_sidecar(path)
    if not path.is_file():
        raise DataFormatError(path, "backbone weights (.safetensors)", "missing")
    size = tuple(img_size) if img_size is not None else tuple(meta["img_size"])
    backbone = create_backbone(meta["arch"], img_size=size)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise DataFormatError(path, "a safetensors file", type(exc).__name__) from exc
    check_finite_weights(state, path)
    if "pos_embed" in state and size != tuple(meta["img_size"]):
        from saip_bench.pretrain.components.vit import resize_pos_embed

        old = tuple(s // meta["patch_size"] for s in meta["img_size"])
        new = tuple(-(-s // meta["patch_size"]) for s in size)
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], old, new, 1)
    missing, unexpected = backbone.body.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataFormatError(
            path, f"weights of {meta['arch']}", f"missing {missing}, unexpected {unexpected}"
        )
    backbone.pretrain_meta = meta  # type: ignore[attr-defined]
    return backbone


def load_into_timm(path: str | Path) -> torch.nn.Module:
    """The exported weights in a bare ``timm.create_model`` (what users outside saip-bench do)."""
    import timm

    meta = read_sidecar(path)
    kwargs = dict(meta["timm_kwargs"])
    if "img_size" in kwargs:
        kwargs["img_size"] = tuple(kwargs["img_size"])
    model = timm.create_model(meta["timm_name"], pretrained=False, **kwargs)
    state = load_file(str(path))
    check_finite_weights(state, path)
    model.load_state_dict(state, strict=True)
    return model
