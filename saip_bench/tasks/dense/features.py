"""Multi-level backbone features for dense heads, and the protocol knobs the dense tasks share.

Why: ViTs give several same-stride block outputs, ConvNets/hybrids give a pyramid; heads only see a list of
NCHW maps plus their channel counts, so one head serves all three backbone families.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from saip_bench.backbones import Backbone
from saip_bench.devices import module_device
from saip_bench.specs import TaskSpec


def default_levels(backbone: Backbone, count: int) -> list[int]:
    """The last ``count`` levels: ViT blocks evenly spread over the depth, or the last stages."""
    depth = backbone.depth
    count = max(1, min(count, depth))
    if backbone.family == "vit":
        step = depth // count
        return [depth - 1 - step * i for i in reversed(range(count))]
    return list(range(depth - count, depth))


def resolve_levels(backbone: Backbone, levels: int | Sequence[int] | None) -> list[int]:
    """``levels`` from a spec: an int = how many (see ``default_levels``), a list = explicit indices."""
    if levels is None:
        return [backbone.depth - 1]
    if isinstance(levels, int):
        return default_levels(backbone, levels)
    return [int(i) % backbone.depth for i in levels]


def multi_level(backbone: Backbone, images: torch.Tensor, levels: Sequence[int]) -> list[torch.Tensor]:
    """NCHW maps of the chosen levels (ViT: block outputs; others: stage outputs).

    A ViT whose unit sets ``final_norm`` (``base.set_final_norm``) returns them through its pretrained
    final LayerNorm, as mmpose's and mmdet's ViTs feed their heads.
    """
    norm = backbone.family == "vit" and bool(getattr(backbone, "dense_final_norm", False))
    return backbone.intermediate(images, list(levels), norm=norm)


def level_channels(backbone: Backbone, levels: Sequence[int], size: tuple[int, int]) -> list[int]:
    """Channel counts of ``levels`` by one tiny probe (backbones do not all describe every block)."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps = multi_level(backbone, torch.zeros(1, 3, *size, device=module_device(backbone)), levels)
    backbone.train(was_training)
    return [int(m.shape[1]) for m in maps]


def unread_parameters(backbone: Backbone, levels: Sequence[int],
                      size: tuple[int, int] = (64, 64)) -> list[str]:
    """Names of the backbone's parameters that the maps of ``levels`` do not depend on, by one tiny forward
    and backward (TinyViT's head norm, a ViT's final norm without ``final_norm``, blocks after the deepest
    level): they get no gradient in a dense fine-tune, which DDP must be told (``Task.run``)."""
    named = list(backbone.named_parameters())
    wanted = [p.requires_grad for _, p in named]
    was_training = backbone.training
    backbone.eval()  # no drop path: the graph is the one every step shares
    try:
        for _, param in named:
            param.requires_grad_(True)
        with torch.enable_grad():
            maps = multi_level(backbone, torch.zeros(1, 3, *size, device=module_device(backbone)), levels)
            grads = torch.autograd.grad(sum(m.float().sum() for m in maps), [p for _, p in named],
                                        allow_unused=True)
    finally:
        backbone.train(was_training)
        for (_, param), flag in zip(named, wanted, strict=True):
            param.requires_grad_(flag)
    return [name for (name, _), grad in zip(named, grads, strict=True) if grad is None]


def backbone_fingerprint(backbone: Backbone) -> str:
    """A cheap identity of the weights for feature-cache keys (a cache dir shared by mistake across
    checkpoints must not hand one backbone's features to another)."""
    with torch.no_grad():
        sums = [round(float(p.double().sum()), 6) for p in backbone.parameters()]
    norm = "-ln" if getattr(backbone, "dense_final_norm", False) else ""  # the maps differ with the norm
    return f"{backbone.name}-{len(sums)}-{hash(tuple(sums)) & 0xFFFFFFFF:08x}{norm}"


def protocol_params(spec: TaskSpec, protocol: str | None) -> dict[str, Any]:
    """Spec params overlaid by the protocol's params (e.g. a smaller input or head for ``frozen``)."""
    merged = dict(spec.params)
    if protocol is not None and protocol in spec.protocols:
        merged.update(spec.protocols[protocol].params)
    return merged


def head_params(spec: TaskSpec, protocol: str | None) -> dict[str, Any]:
    """``head.params`` overlaid by the protocol's ``params.head`` (the frozen head is smaller)."""
    merged = dict(spec.head.params)
    if protocol is not None and protocol in spec.protocols:
        merged.update(spec.protocols[protocol].params.get("head", {}))
    return merged


def input_size(spec: TaskSpec, protocol: str | None) -> tuple[int, int]:
    """(height, width) the network sees: the protocol's ``input_size`` or the spec's."""
    size = protocol_params(spec, protocol).get("input_size", spec.input_size)
    return int(size[0]), int(size[1])
