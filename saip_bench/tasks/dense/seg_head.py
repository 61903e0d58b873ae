"""A light segmentation head over multi-level features, and flip-test helpers with left/right class swap.

Why generic: LIP (single person) and CIHP (multi-person) share it; the class count and the left/right
class pairs come from the spec, never from code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationHead(nn.Module):
    """Per level: 1x1 projection + BN; all upsampled to the finest level, concatenated, fused by a 3x3
    conv, classified by a 1x1 conv. Logits come out at the finest level's resolution."""

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, channels: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True))
            for c in in_channels
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels * len(in_channels), channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.lateral):
            raise ValueError(f"head built for {len(self.lateral)} levels, got {len(features)}")
        target = max((f.shape[-2:] for f in features), key=lambda s: s[0] * s[1])
        projected = []
        for feature, lateral in zip(features, self.lateral, strict=True):
            x = lateral(feature)
            if x.shape[-2:] != target:
                x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            projected.append(x)
        return self.classifier(self.dropout(self.fuse(torch.cat(projected, dim=1))))


def swap_permutation(num_classes: int, flip_pairs: Sequence[Sequence[int]]) -> list[int]:
    """Class order after a horizontal flip: each (left, right) pair exchanged, others unchanged."""
    order = list(range(num_classes))
    for left, right in flip_pairs:
        order[left], order[right] = order[right], order[left]
    return order


def flip_logits(logits: torch.Tensor, flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Undo a horizontal input flip on (B, C, H, W) logits: mirror the width and swap left/right classes."""
    return logits.flip(-1)[:, swap_permutation(logits.shape[1], flip_pairs)]


def flip_labels(
    labels: torch.Tensor, flip_pairs: Sequence[Sequence[int]], ignore_index: int = 255
) -> torch.Tensor:
    """Mirror (…, H, W) label maps and swap left/right class ids (training augmentation)."""
    lookup = torch.arange(256, dtype=torch.long)
    for left, right in flip_pairs:
        lookup[left], lookup[right] = right, left
    lookup[ignore_index] = ignore_index
    return lookup[labels.long().flip(-1)].to(labels.dtype)
