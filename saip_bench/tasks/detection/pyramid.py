"""A simple feature pyramid (ViTDet style for ViTs, torchvision FPN for stage pyramids) and helpers to run
torchvision detectors from backbone maps.

Why drive torchvision's detectors from maps instead of ``model(images)``: the frozen protocol caches the
backbone's maps once and trains only neck + heads, and both protocols share one resize (the whole image to
the spec's input size; boxes scaled back in ``predict``). The detectors (RetinaNet, Mask R-CNN) are used as
is: anchors, matching, losses, NMS and mask pasting are torchvision's.
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

from saip_bench.backbones import Backbone
from saip_bench.tasks.detection import ops as _ops  # noqa: F401  (eager roi_align on CPU torch)


class SimpleFeaturePyramid(nn.Module):
    """Backbone maps -> ``OrderedDict`` of ``out_channels`` maps at 3 strides (fine to coarse).

    ViT (one stride-16 map): 2x deconvolution, identity and 2x max-pool of the last block (ViTDet's simple
    pyramid). Stage pyramids (ConvNet/hybrid): torchvision's FPN over the last three stages.
    """

    def __init__(self, in_channels: list[int], out_channels: int, single_scale: bool) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.single_scale = single_scale
        if single_scale:
            channels = in_channels[-1]
            self.up = nn.Sequential(nn.ConvTranspose2d(channels, out_channels, 2, stride=2), nn.GELU())
            self.same = nn.Conv2d(channels, out_channels, 1)
            self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(channels, out_channels, 1))
            self.smooth = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(3))
        else:
            self.fpn = FeaturePyramidNetwork(in_channels[-3:], out_channels)

    def forward(self, maps: list[torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        if self.single_scale:
            top = maps[-1]
            levels = [self.up(top), self.same(top), self.down(top)]
            return OrderedDict((str(i), smooth(level)) for i, (smooth, level) in
                               enumerate(zip(self.smooth, levels, strict=True)))
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps[-3:])))


def pyramid_levels(backbone: Backbone) -> list[int]:
    """Which backbone levels feed the pyramid: the last block (ViT) or the last three stages."""
    if backbone.family == "vit":
        return [backbone.depth - 1]
    return list(range(max(0, backbone.depth - 3), backbone.depth))


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
