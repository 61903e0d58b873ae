"""MAE (He et al., CVPR'22): reconstruct the normalised pixels of randomly masked patches.

ViT only: the encoder sees only the visible tokens, which has no faithful equivalent for the hybrid and
ConvNet backbones (masked-input convolution changes the method; SparK-style sparse convs are a different
method), so those families are refused.

Pieces reused from ``components``: ``vit_forward_visible`` (visible-token encoder), ``MAEDecoder``
(8 blocks, 512-d, 16 heads in ``paper``), ``masking_from_noise`` and ``masked_patch_mse`` (norm-pix).
Views: one random resized crop + flip at ``view_size`` (MAE uses no colour augmentation).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from saip_bench.backbones import Backbone
from saip_bench.devices import host_to_device
from saip_bench.errors import SpecError
from saip_bench.pretrain.base import METHODS, PretrainMethod
from saip_bench.pretrain.components.mae_decoder import MAEDecoder, masked_patch_mse, masking_from_noise
from saip_bench.pretrain.components.vit import num_prefix_tokens, vit_forward_visible
from saip_bench.pretrain.methods._common import batch_rngs, crop_views, require_family
from saip_bench.pretrain.views import normalize

MAE_DEFAULTS: dict[str, Any] = {
    "view_size": None,  # None: the backbone input size (the trainer's img_size)
    "crop_scale": [0.2, 1.0],
    "crop_ratio": [0.4, 0.6],
    "mask_ratio": 0.75,
    "norm_pix": True,
    "decoder_dim": 512,
    "decoder_depth": 8,
    "decoder_heads": 16,
}


@METHODS.register("mae", paper="He et al., CVPR 2022")
class MAE(PretrainMethod):
    """MAE: 75% random patch masking, light decoder, normalised-pixel MSE on masked patches (ViT only)."""

    name: ClassVar[str] = "mae"
    config_keys: ClassVar[frozenset[str]] = frozenset(MAE_DEFAULTS)
    supported_families: ClassVar[frozenset[str]] = frozenset({"vit"})

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, {**MAE_DEFAULTS, **config})
        require_family(backbone, self.supported_families, self.name)
        ratio = float(self.config["mask_ratio"])
        if not 0.0 < ratio < 1.0:
            raise SpecError(f"{self.name} mask_ratio must be in (0, 1), got {ratio}")
        size = self.config["view_size"] or backbone.img_size
        self.view_size = (int(size[0]), int(size[1]))
        self.patch_size = int(backbone.reduction)
        self.prefix = num_prefix_tokens(backbone.body)
        grid = self.grid_for(self.view_size)
        self.decoder = MAEDecoder(
            backbone.num_features,
            embed_dim=int(self.config["decoder_dim"]),
            depth=int(self.config["decoder_depth"]),
            num_heads=int(self.config["decoder_heads"]),
            patch_size=self.patch_size,
            pos_grid=grid,
            num_prefix=self.prefix,
        )

    def grid_for(self, size: tuple[int, int]) -> tuple[int, int]:
        return (-(-size[0] // self.patch_size), -(-size[1] // self.patch_size))

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        return self.grid_for((int(images.shape[-2]), int(images.shape[-1])))

    def keep_count(self, grid: tuple[int, int]) -> int:
        return max(1, int(grid[0] * grid[1] * (1.0 - float(self.config["mask_ratio"]))))

    def crop_view(self, images: torch.Tensor, rngs: list[np.random.Generator]) -> torch.Tensor:
        """One random resized crop + flip, ImageNet-normalised."""
        view = crop_views(images, rngs, self.view_size, self.config["crop_scale"], self.config["crop_ratio"])
        return normalize(view)

    @staticmethod
    def random_noise(rngs: list[np.random.Generator], length: int, device: torch.device) -> torch.Tensor:
        """Per-sample uniform masking scores (drawn from each sample's own generator)."""
        noise = torch.from_numpy(np.stack([rng.random(length) for rng in rngs])).float()
        return host_to_device(noise, device)

    def target(self, image: torch.Tensor) -> torch.Tensor:
        """Reconstruction target: the (ImageNet-normalised) input view, as in MAE."""
        return image

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        rngs = batch_rngs(batch, generator)
        image = self.crop_view(batch["image"], rngs)
        grid = self.grid(image)
        noise = self.random_noise(rngs, grid[0] * grid[1], image.device)
        return {"image": image, "masking": masking_from_noise(noise, self.keep_count(grid))}

    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        image = views["image"]
        ids_keep, ids_restore, mask = views["masking"]
        tokens, grid = vit_forward_visible(self.backbone.body, image, ids_keep)
        pred = self.decoder(tokens[:, : self.prefix], tokens[:, self.prefix :], ids_restore, grid)
        norm_pix = bool(self.config["norm_pix"])
        loss = masked_patch_mse(pred, self.target(image), mask, self.patch_size, norm_pix)
        return {"loss": loss, "loss/recon": loss.detach()}
