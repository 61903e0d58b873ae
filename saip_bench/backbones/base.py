"""One interface over timm backbones of three families (ViT, hybrid, ConvNet).

Why: every pretraining method and every task head talks to ``Backbone`` only, so a new family is one
factory here. The timm model lives in ``.body`` and is exported as a plain timm ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from saip_bench.backbones.cpu_bf16 import guard_strided_convs
from saip_bench.devices import module_device
from saip_bench.registry import Registry

Family = Literal["vit", "hybrid", "convnet"]
BACKBONES: Registry[Any] = Registry("backbone")


@dataclass(frozen=True)
class StageInfo:
    channels: int
    reduction: int


class Backbone(nn.Module):
    """A timm model plus the uniform feature interface of ARCHITECTURE.md.

    ``forward_features(x)`` returns ``{"cls": (B, C), "tokens": (B, N, C), "fmap": (B, C, h, w)}``;
    ``intermediate(x, indices)`` returns NCHW maps of the chosen blocks (ViT) or stages (others).
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        family: Family,
        timm_name: str,
        timm_kwargs: dict[str, Any],
        img_size: tuple[int, int],
        stages: Sequence[StageInfo],
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.family: Family = family
        self.timm_name = timm_name
        self.timm_kwargs = dict(timm_kwargs)
        self.img_size = tuple(img_size)
        self.stages = tuple(stages)
        self.num_features = int(body.num_features)

    def __setattr__(self, name: str, value: Any) -> None:
        # every body this backbone holds, including one rebuilt later (tasks' apply_drop_path), gets the
        # CPU bf16 strided-conv guard (backbones/cpu_bf16.py)
        if name == "body" and isinstance(value, nn.Module):
            guard_strided_convs(value)
        super().__setattr__(name, value)

    @property
    def reduction(self) -> int:
        return self.stages[-1].reduction

    @property
    def depth(self) -> int:
        """Number of indexable levels for ``intermediate`` (ViT blocks or stages)."""
        if self.family == "vit":
            return len(self.body.blocks)  # type: ignore[arg-type]
        return len(self.stages)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        if self.family == "vit":
            patch = self.reduction  # sizes not divisible by 16 are zero-padded (dynamic_img_pad)
            return -(-height // patch), -(-width // patch)
        probe = torch.zeros(1, 3, height, width, device=module_device(self.body))
        with torch.no_grad():
            fmap = self.body.forward_features(probe)
        return int(fmap.shape[-2]), int(fmap.shape[-1])

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.family == "vit":
            tokens = self.body.forward_features(x)
            prefix = getattr(self.body, "num_prefix_tokens", 1)
            patch_tokens = tokens[:, prefix:]
            grid_h, grid_w = self.grid_size(x.shape[-2], x.shape[-1])
            fmap = patch_tokens.transpose(1, 2).reshape(x.shape[0], -1, grid_h, grid_w)
            return {"cls": tokens[:, 0], "tokens": patch_tokens, "fmap": fmap}
        fmap = self.body.forward_features(x)
        # timm's pre-logits pooled feature (TinyViT: pool + LayerNorm), so every parameter is used
        # (DDP needs no find_unused_parameters) and the global feature is the one timm users know.
        cls = self.body.forward_head(fmap, pre_logits=True)
        return {"cls": cls, "tokens": fmap.flatten(2).transpose(1, 2), "fmap": fmap}

    def intermediate(
        self, x: torch.Tensor, indices: int | Sequence[int], norm: bool = False
    ) -> list[torch.Tensor]:
        """NCHW feature maps after the given blocks (ViT) / stages; negative indices count from the end."""
        return list(
            self.body.forward_intermediates(
                x, indices=indices, norm=norm, output_fmt="NCHW", intermediates_only=True
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["cls"]

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Plain timm state_dict: loads with ``timm.create_model(timm_name, **timm_kwargs)``."""
        return {k: v.detach().clone() for k, v in self.body.state_dict().items()}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "timm_name": self.timm_name,
            "timm_kwargs": self.timm_kwargs,
            "img_size": list(self.img_size),
            "num_features": self.num_features,
            "reduction": self.reduction,
            "params": count_parameters(self),
        }


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def flops(module: nn.Module, img_size: tuple[int, int], batch: int = 1) -> int:
    """Forward FLOPs (PyTorch counts a multiply-add as 2) at one input size."""
    was_training = module.training
    module.eval()
    x = torch.zeros(batch, 3, *img_size, device=module_device(module))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    module.train(was_training)
    return int(counter.get_total_flops())


def create_backbone(name: str, img_size: tuple[int, int] = (256, 128), **kwargs: Any) -> Backbone:
    """Build a registered backbone (random init; weights come from pretraining checkpoints)."""
    return BACKBONES.create(name, img_size=tuple(img_size), **kwargs)


def _stages_from_timm(body: nn.Module) -> list[StageInfo]:
    return [StageInfo(int(f["num_chs"]), int(f["reduction"])) for f in body.feature_info]


@BACKBONES.register("vit_tiny", family="vit", paper="SAIP ViT-Tiny/16: 192-d, 12 blocks, 3 heads")
def vit_tiny(img_size: tuple[int, int] = (256, 128), drop_path_rate: float = 0.0) -> Backbone:
    """The paper's ViT-Tiny/16; learnable position embedding resampled (2-D) for any input size.

    Inputs whose sides are not multiples of 16 are zero-padded to the next multiple (the authors'
    conv floored them instead, dropping the last partial patch).
    """
    kwargs = {
        "img_size": tuple(img_size),
        "num_classes": 0,
        "dynamic_img_size": True,
        "dynamic_img_pad": True,
        "drop_path_rate": drop_path_rate,
    }
    body = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    stages = [StageInfo(body.embed_dim, 16)]
    return Backbone("vit_tiny", body, "vit", "vit_tiny_patch16_224", kwargs, img_size, stages)


@BACKBONES.register("tinyvit_5m", family="hybrid", paper="TinyViT-5M (ViT+ConvNet hybrid)")
def tinyvit_5m(img_size: tuple[int, int] = (256, 128), drop_path_rate: float = 0.0) -> Backbone:
    kwargs = {"num_classes": 0, "drop_path_rate": drop_path_rate}
    body = timm.create_model("tiny_vit_5m_224", pretrained=False, **kwargs)
    return Backbone(
        "tinyvit_5m", body, "hybrid", "tiny_vit_5m_224", kwargs, img_size, _stages_from_timm(body)
    )


@BACKBONES.register("starnet_s3", family="convnet", paper="StarNet-S3 (~5.5M ConvNet)")
def starnet_s3(img_size: tuple[int, int] = (256, 128), drop_path_rate: float = 0.0) -> Backbone:
    kwargs = {"num_classes": 0, "drop_path_rate": drop_path_rate}
    body = timm.create_model("starnet_s3", pretrained=False, **kwargs)
    return Backbone(
        "starnet_s3", body, "convnet", "starnet_s3", kwargs, img_size, _stages_from_timm(body)
    )
