"""A simple feature pyramid (ViTDet style for ViTs, torchvision FPN for stage pyramids) and helpers to run
torchvision detectors from backbone maps.

Why drive torchvision's detectors from maps instead of ``model(images)``: the frozen protocol caches the
backbone's maps once and trains only neck + heads, and the tasks choose their own resize (the whole image to
the spec's input size, or an aspect-kept resize padded per batch; boxes mapped back in ``predict``). The
detectors' parts (RetinaNet, Mask R-CNN, CrowdDet's RPN and RoI pooling) are torchvision's: anchors,
matching, losses, NMS and mask pasting.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from saip_bench.backbones import Backbone
from saip_bench.tasks.detection import ops as _ops  # noqa: F401  (eager roi_align on CPU torch)

PYRAMID_DEPTHS = (3, 5)
"""Supported pyramid depths: 3 levels (strides 8-32 on a stride-16 ViT; today's callers) and 5 levels
(P2-P6, strides 4-64; the FPN of two-stage detectors such as CrowdDet and Mask R-CNN)."""


class SimpleFeaturePyramid(nn.Module):
    """Backbone maps -> ``OrderedDict`` of ``out_channels`` maps, fine to coarse.

    ``num_levels=3`` (default, unchanged): ViT (one stride-16 map): 2x deconvolution, identity and 2x
    max-pool of the last block (ViTDet's simple pyramid); stage pyramids: torchvision's FPN over the last
    three stages. Keys ``"0"``-``"2"``.

    ``num_levels=5`` (P2-P6, strides 4, 8, 16, 32, 64 on a stride-16 ViT or a stride-32 stage pyramid):
    ViT: 4x (two deconvolutions with BatchNorm + GELU between), 2x deconvolution, identity and a stride-2
    3x3 convolution of the last block, then torchvision's FPN over these four with P6 by max-pool (the
    ViTDet-style neck of the CrowdDet recipe, docs/method.md); stage pyramids: torchvision's FPN over the
    last four stages plus the same max-pool P6. Keys ``"0"``-``"3"`` and ``"pool"``, as torchvision's own
    FPN detectors name them (RoI heads pool ``"0"``-``"3"``).
    """

    def __init__(self, in_channels: list[int], out_channels: int, single_scale: bool,
                 num_levels: int = 3) -> None:
        super().__init__()
        if num_levels not in PYRAMID_DEPTHS:
            raise ValueError(f"SimpleFeaturePyramid: num_levels must be one of {PYRAMID_DEPTHS}, "
                             f"got {num_levels}")
        self.out_channels = out_channels
        self.single_scale = single_scale
        self.num_levels = num_levels
        if num_levels == 5:
            self._init_p2_p6(in_channels, out_channels, single_scale)
        elif single_scale:
            channels = in_channels[-1]
            self.up = nn.Sequential(nn.ConvTranspose2d(channels, out_channels, 2, stride=2), nn.GELU())
            self.same = nn.Conv2d(channels, out_channels, 1)
            self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(channels, out_channels, 1))
            self.smooth = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(3))
        else:
            self.fpn = FeaturePyramidNetwork(in_channels[-3:], out_channels)

    def _init_p2_p6(self, in_channels: list[int], out_channels: int, single_scale: bool) -> None:
        if single_scale:
            channels = in_channels[-1]
            half, quarter = max(1, channels // 2), max(1, channels // 4)
            self.up4 = nn.Sequential(nn.ConvTranspose2d(channels, half, 2, stride=2), nn.BatchNorm2d(half),
                                     nn.GELU(), nn.ConvTranspose2d(half, quarter, 2, stride=2))
            self.up2 = nn.ConvTranspose2d(channels, half, 2, stride=2)
            self.down2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            fpn_in = [quarter, half, channels, channels]
        else:
            if len(in_channels) < 4:
                raise ValueError(f"SimpleFeaturePyramid: a 5-level pyramid from stages needs 4 stage maps, "
                                 f"got {len(in_channels)} (channels {in_channels})")
            fpn_in = in_channels[-4:]
        self.fpn = FeaturePyramidNetwork(fpn_in, out_channels, extra_blocks=LastLevelMaxPool())

    def forward(self, maps: list[torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        if self.num_levels == 5:
            if self.single_scale:
                top = maps[-1]
                inputs = [self.up4(top), self.up2(top), top, self.down2(top)]
            else:
                inputs = list(maps[-4:])
            return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(inputs)))
        if self.single_scale:
            top = maps[-1]
            levels = [self.up(top), self.same(top), self.down(top)]
            return OrderedDict((str(i), smooth(level)) for i, (smooth, level) in
                               enumerate(zip(self.smooth, levels, strict=True)))
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps[-3:])))


def pyramid_levels(backbone: Backbone, num_levels: int = 3) -> list[int]:
    """Which backbone levels feed the pyramid: the last block (ViT) or the last three (``num_levels=3``) or
    four (``num_levels=5``) stages."""
    if backbone.family == "vit":
        return [backbone.depth - 1]
    stages = 4 if num_levels == 5 else 3
    return list(range(max(0, backbone.depth - stages), backbone.depth))


def pyramid_strides(backbone: Backbone, num_levels: int = 3) -> tuple[int, ...]:
    """Nominal input strides of the pyramid's outputs, fine to coarse (before any rounding of odd sizes).

    Why: anchor generators and RoI poolers are sized per level; a stride-16 ViT gives (8, 16, 32) or
    (4, 8, 16, 32, 64), a stage pyramid its stages' reductions (plus twice the last for P6).
    """
    if backbone.family == "vit":
        factors = (0.5, 1, 2) if num_levels == 3 else (0.25, 0.5, 1, 2, 4)
        return tuple(int(backbone.reduction * f) for f in factors)
    used = [backbone.stages[i].reduction for i in pyramid_levels(backbone, num_levels)]
    return tuple(used) if num_levels == 3 else (*used, used[-1] * 2)


def image_list(batch: int, size: tuple[int, int], reference: torch.Tensor) -> ImageList:
    """An ``ImageList`` of ``batch`` images of ``size``; detectors read only its shape and sizes."""
    tensors = reference.new_zeros((batch, 1, *size)).expand(batch, 3, *size)
    return ImageList(tensors, [tuple(size)] * batch)


def scale_boxes(boxes: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """x1y1x2y2 boxes from one image size to another (independent x / y factors)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def fp32_heads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a detector method on float32 maps with autocast off.

    Why: the backbone may run under bf16 autocast, but torchvision's box coding, RoIAlign fallback, matching
    and losses expect float32 boxes and features; the heads are a small share of the cost.
    """

    @functools.wraps(method)
    def wrapper(self, maps: list[torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(maps[0].device.type, enabled=False):
            return method(self, [m.float() for m in maps], *args, **kwargs)

    return wrapper
