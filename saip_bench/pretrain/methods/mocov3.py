"""MoCo v3 (Chen, Xie, He, ICCV'21): symmetric InfoNCE between a predictor and a momentum encoder.

Query encoder = backbone + projector (3-layer MLP with BN, last BN without affine) + predictor (2-layer
MLP with BN); key encoder = EMA of backbone + projector (cosine momentum ``momentum_base`` -> 1 over
global steps, shared ``EMATeacher``). Loss ``ctr(q1, k2) + ctr(q2, k1)`` with ``ctr`` the InfoNCE of
``_common.info_nce`` (temperature 0.2 for ViT, scaled by 2T; keys gathered over processes).
Views: two crops with BYOL's photometric recipe (blur 1.0 / 0.1, solarize 0 / 0.2).

Note: MoCo v3 uses SyncBatchNorm in the MLPs; the one trainer does not convert BN layers, so under DDP the
BN statistics are per process (per-GPU batch); say so when comparing multi-GPU runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.errors import SpecError
from saip_bench.pretrain.base import METHODS, PretrainMethod
from saip_bench.pretrain.components.ema import EMATeacher
from saip_bench.pretrain.methods._common import batch_rngs, info_nce, method_colour_augments
from saip_bench.pretrain.methods.dino import embedding_std
from saip_bench.pretrain.views import augmented_crops, normalize

MOCO_DEFAULTS: dict[str, Any] = {
    "view_size": None,  # None: the backbone input size
    "crop_scale": [0.08, 1.0],
    "crop_ratio": [0.4, 0.6],
    "hidden_dim": 4096,
    "out_dim": 256,
    "temperature": 0.2,
    "momentum_base": 0.99,
    "momentum_final": 1.0,
    # optional "colour": ColorAugment overrides of both views (as DINO's)
}


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int, last_bn: bool = True) -> nn.Sequential:
    """MoCo v3 MLP: (Linear, BN, ReLU) x (layers - 1), Linear, then BN without affine on the output."""
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    modules.append(nn.Linear(dim, out_dim, bias=False))
    if last_bn:
        modules.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*modules)


class ProjectedEncoder(nn.Module):
    def __init__(self, backbone: Backbone, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone.forward_features(images)["cls"])


@METHODS.register("mocov3", paper="Chen, Xie, He, ICCV 2021")
class MoCoV3(PretrainMethod):
    """MoCo v3: momentum encoder, projector + predictor, symmetric InfoNCE (every backbone family)."""

    name: ClassVar[str] = "mocov3"
    config_keys: ClassVar[frozenset[str]] = frozenset({*MOCO_DEFAULTS, "colour"})

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, {**MOCO_DEFAULTS, **config})
        cfg = self.config
        if float(cfg["temperature"]) <= 0:
            raise SpecError("mocov3 temperature must be > 0")
        self.augs = method_colour_augments("mocov3", cfg)
        hidden, out = int(cfg["hidden_dim"]), int(cfg["out_dim"])
        self.projector = mlp(backbone.num_features, hidden, out, layers=3)
        self.predictor = mlp(out, hidden, out, layers=2)
        self.momentum_encoder = EMATeacher(
            ProjectedEncoder(backbone, self.projector),
            float(cfg["momentum_base"]), float(cfg["momentum_final"]),
        )

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        cfg = self.config
        size = tuple(int(v) for v in (cfg["view_size"] or self.backbone.img_size))
        rngs = batch_rngs(batch, generator)
        augments = (self.augs["global1_aug"], self.augs["global2_aug"])  # BYOL's asymmetric blur / solarize
        crops = augmented_crops(batch["image"], rngs, augments, size, tuple(cfg["crop_scale"]),
                                tuple(cfg["crop_ratio"]))
        return {"views": [normalize(crop) for crop in crops]}

    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        first, second = views["views"]
        batch = first.shape[0]
        both = torch.cat([first, second])
        # BN statistics per view, as MoCo v3 runs each view through the encoder separately
        cls = self.backbone.forward_features(both)["cls"]
        q1, q2 = (self.predictor(self.projector(c)) for c in cls.split(batch))
        with torch.no_grad():
            # MoCo v3 runs the key encoder in train mode: its BatchNorms normalise with the batch
            # statistics (the shared EMATeacher otherwise keeps its copy in eval mode)
            keys_encoder = self.momentum_encoder.module
            keys_encoder.train(self.training)
            k1, k2 = (keys_encoder(v) for v in (first, second))
            keys_encoder.eval()
        temperature = float(self.config["temperature"])
        loss = info_nce(q1, k2, temperature) + info_nce(q2, k1, temperature)
        return {"loss": loss, "loss/contrastive": loss.detach(), "stat/embedding_std": embedding_std(q1)}

    def on_after_step(self, step: int, total_steps: int) -> None:
        self.momentum_encoder.update(ProjectedEncoder(self.backbone, self.projector), step, total_steps)
