"""Random initialisation: no training, the export is the seeded initial backbone (the boards' floor).

The trainer still runs (so the export path, sidecar and config hash are the same as for every method),
but nothing of the backbone is trainable: the only trainable parameter is a 0-d placeholder excluded
from weight decay whose loss is ``0 * placeholder``, so AdamW leaves every backbone weight exactly at
its seeded initial value. The ``random`` presets run a single step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.pretrain.base import METHODS, PretrainMethod


@METHODS.register("random", paper="random initialisation (no pretraining)")
class RandomInit(PretrainMethod):
    """Random init: exports the seeded, untrained backbone (a floor for every board)."""

    name: ClassVar[str] = "random"
    config_keys: ClassVar[frozenset[str]] = frozenset()
    requires_training: ClassVar[bool] = False

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, config)
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        # AdamW needs at least one parameter; this one is never used by the backbone.
        self.placeholder = nn.Parameter(torch.zeros(()))

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        return {"image": batch["image"][:1]}

    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        loss = self.placeholder * 0.0
        return {"loss": loss, "loss/none": loss.detach()}

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [("placeholder", self.placeholder)]

    def no_weight_decay_names(self) -> set[str]:
        return {"placeholder"}
