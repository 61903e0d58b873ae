"""The contract between the one trainer and every pretraining method (SAIP and baselines).

A method is a small ``nn.Module``: it owns its student backbone, heads, teacher (if any) and losses.
The trainer owns optimisation (AdamW, LR/WD schedules, accumulation, AMP, clipping), checkpoints,
resume, DDP and progress. Methods never step optimisers or touch the data loader.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.registry import Registry

METHODS: Registry[type[PretrainMethod]] = Registry("method")


class PretrainMethod(nn.Module, metaclass=ABCMeta):
    """Subclass, set the class attributes, and register with ``@METHODS.register(name, ...)``.

    Batches from the pretraining loader are dicts of tensors: ``image`` (B, 3, H, W) float in [0, 1]
    at the loader's source size, and when the method asks for them: ``background`` (B, 3, Hb, Wb),
    ``label`` (B,) identity labels, ``keypoints`` (B, K, 3) in source-image pixels.
    """

    name: ClassVar[str] = ""
    supported_families: ClassVar[frozenset[str]] = frozenset({"vit", "hybrid", "convnet"})
    needs_labels: ClassVar[bool] = False
    needs_keypoints: ClassVar[bool] = False
    needs_backgrounds: ClassVar[bool] = False

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = dict(config)

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        """Batched view generation on the batch's device (crops, masks, canvases)."""
        return batch

    @abstractmethod
    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Return the loss terms; key ``loss`` is the total that is back-propagated."""

    def on_after_step(self, step: int, total_steps: int) -> None:
        """Hook after each optimiser step (EMA teacher update etc.); ``step`` is the global step."""

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names excluded from weight decay besides biases and norms (1-D params)."""
        return set()

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def export_backbone(self) -> Backbone:
        """The backbone whose weights downstream tasks start from (student by default)."""
        return self.backbone

    def hyperparameters(self) -> dict[str, Any]:
        """Recorded in the checkpoint sidecar."""
        return dict(self.config)
