"""ViTPose-style "classic" heatmap head: deconvolutions (4x4, stride 2, BN, ReLU) then a 1x1 conv to K maps.

Why this head: the paper's pose protocol (docs/method.md#downstream-fine-tuning-protocols) uses two
256-channel deconvolutions on the
last feature map (stride 16 -> stride 4 heatmaps). Backbones whose last map is coarser (stride 32) get
their heatmaps resized to the codec's size so every family trains against the same targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DeconvHeatmapHead(nn.Module):
    def __init__(
        self, in_channels: int, num_keypoints: int, deconv_channels: Sequence[int] = (256, 256),
        position_bias_hw: tuple[int, int] | None = None,
    ) -> None:
        """``position_bias_hw``: add a learned per-keypoint map of that (heatmap) size to the output. The
        convolutional head is translation-equivariant, so where in the crop a keypoint usually lies has to
        come from the features; frozen small ViT tokens carry too little of it for a short CPU fit
        (docs/board_signal.md, COCO-WholeBody)."""
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out_channels in deconv_channels:
            layers += [
                nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, num_keypoints, 1)
        self.position_bias = (nn.Parameter(torch.zeros(1, num_keypoints, *position_bias_hw))
                              if position_bias_hw is not None else None)
        self._init_weights()

    def _init_weights(self) -> None:
        """mmpose's heatmap-head init: deconvs and the final conv ~ N(0, 0.001), zero bias, BN = identity.
        Heatmaps then start near zero, so the first steps localise instead of un-learning noise."""
        for module in self.modules():
            if isinstance(module, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, feature: torch.Tensor, heatmap_hw: tuple[int, int] | None = None) -> torch.Tensor:
        heatmaps = self.final(self.deconv(feature))
        if heatmap_hw is not None and tuple(heatmaps.shape[-2:]) != tuple(heatmap_hw):
            heatmaps = F.interpolate(heatmaps, size=heatmap_hw, mode="bilinear", align_corners=False)
        if self.position_bias is not None:
            if tuple(heatmaps.shape[-2:]) != tuple(self.position_bias.shape[-2:]):
                raise ValueError(f"position bias {tuple(self.position_bias.shape[-2:])} does not match the "
                                 f"heatmaps {tuple(heatmaps.shape[-2:])}")
            heatmaps = heatmaps + self.position_bias
        return heatmaps


def keypoint_mse(heatmaps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mmpose's ``KeypointMSELoss(use_target_weight=True)``: MSE of weight-masked heatmaps."""
    mask = weights[:, :, None, None]
    return F.mse_loss(heatmaps.float() * mask, target * mask)
