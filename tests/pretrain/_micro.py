"""A micro ViT (48-d, 8 blocks) SAIP for trainer tests: same code paths, a fraction of the compute."""

from __future__ import annotations

from typing import Any

from saip_bench.backbones.base import Backbone, StageInfo
from saip_bench.pretrain.methods.saip import SAIP
from saip_bench.pretrain.trainer import TrainConfig

MICRO_SAIP: dict[str, Any] = {
    "views": {"global_size": [32, 16], "local_size": [16, 16], "n_local": 1, "canvas_size": [32, 32]},
    "head_out_dim": 64,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "csr_dim": 32,
    "csr_depth": 1,
    "csr_heads": 2,
    "css_dim": 32,
    "css_heads": 2,
    "css_self_blocks": 1,
    "css_conv_layers": 1,
}


def micro_vit() -> Backbone:
    import timm  # after saip_bench (torchvision shim)

    kwargs = {
        "img_size": (32, 16),
        "num_classes": 0,
        "dynamic_img_size": True,
        "dynamic_img_pad": True,
        "embed_dim": 48,
        "depth": 8,
        "num_heads": 3,
    }
    body = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    return Backbone("vit_micro", body, "vit", "vit_tiny_patch16_224", kwargs, (32, 16), [StageInfo(48, 16)])


def micro_saip(**overrides: Any) -> SAIP:
    return SAIP(micro_vit(), {**MICRO_SAIP, **overrides})


def micro_train_config(**overrides: Any) -> TrainConfig:
    base = {
        "steps": 6,
        "warmup_steps": 1,
        "batch_size": 4,
        "lr": 1e-3,
        "clip_grad": 3.0,
        "amp": False,
        "checkpoint_every": 3,
        "img_size": [32, 16],
        "source_size": [32, 16],
        "background_size": [32, 32],
    }
    return TrainConfig.model_validate({**base, **overrides})
