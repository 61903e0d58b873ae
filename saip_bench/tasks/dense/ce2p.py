"""The CE2P head of the SCHP parsing recipe: context module, stride-4 decoder, edge branch and fusion.

Why this head: the authors' LIP code (docs/tasks_dense.md, "LIP recipe") decodes at stride 4 with
pyramid pooling on the deepest map, a low-level skip, an edge branch on three levels and a fusion of the
decoder and edge features; a stride-16 linear head loses thin parts (hands, shoes). It takes three
levels (low, middle, deep):

* ViT: three blocks of one stride-16 map (4/8/12 for ViT-T). The low map is brought to stride 4 either
  bilinearly (``low_upsample="bilinear"``, what the recipe does) or by two learnt 2x deconvolutions
  (``"deconv"``, ViTDet's simple-pyramid way). Optional new LayerNorms (``token_norms``) sit on the three
  blocks' outputs and replace the residual stream there, as the recipe's ViT does (``ParsingModel``
  hooks them in).
* Stage pyramids (hybrid, ConvNet): the stride-4, stride-8 and last stages; the low map is already at
  stride 4.

BatchNorm + ReLU stands for the recipe's in-place activated BatchNorm. ``forward`` returns every
output; the fused parsing logits are the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PSPNet context: average pools to ``bins`` x ``bins`` grids, 1x1 projections, upsampled and
    concatenated with the input, merged by a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        self.stages = nn.ModuleList(conv_bn_relu(in_channels, out_channels) for _ in self.bins)
        self.bottleneck = conv_bn_relu(in_channels + len(self.bins) * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        priors = [resize_to(stage(F.adaptive_avg_pool2d(x, b)), size)
                  for b, stage in zip(self.bins, self.stages, strict=True)]
        return self.bottleneck(torch.cat([*priors, x], dim=1))


class EdgeBranch(nn.Module):
    """Per level a 1x1 projection; one shared 3x3 conv gives 2-class edge logits per level; the three
    upsampled to the low level's size and fused by a 1x1 conv. Also returns the concatenated features."""

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        self.project = nn.ModuleList(conv_bn_relu(c, channels) for c in in_channels)
        self.edge = nn.Conv2d(channels, 2, 3, padding=1)
        self.fuse = nn.Conv2d(2 * len(in_channels), 2, 1)

    def forward(self, levels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        size = levels[0].shape[-2:]
        features = [resize_to(project(x), size) for project, x in zip(self.project, levels, strict=True)]
        edges = [self.edge(f) for f in features]
        return self.fuse(torch.cat(edges, dim=1)), torch.cat(features, dim=1)


class Decoder(nn.Module):
    """Context features reduced and upsampled to the low level, joined with its projection, two 1x1
    convs, then a classifier: the first (stride-4) parsing logits and the decoder features."""

    def __init__(self, context_channels: int, low_in: int, low_channels: int, channels: int,
                 num_classes: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(context_channels, channels)
        self.low = conv_bn_relu(low_in, low_channels)
        self.merge = nn.Sequential(conv_bn_relu(channels + low_channels, channels),
                                   conv_bn_relu(channels, channels))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, context: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context = resize_to(self.reduce(context), low.shape[-2:])
        merged = self.merge(torch.cat([context, self.low(low)], dim=1))
        return self.classifier(merged), merged


class CE2POutput(NamedTuple):
    parsing: torch.Tensor  # decoder logits, stride 4
    fused: torch.Tensor  # fusion logits, stride 4: the prediction
    edge: torch.Tensor  # 2-class edge logits, stride 4


class CE2PHead(nn.Module):
    """Context (pyramid pooling on the deep level) -> stride-4 decoder with the low level; edge branch on
    all three; fusion of decoder and edge features to the final logits."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        low_stride: int,
        channels: int = 256,
        context_channels: int = 512,
        low_channels: int = 48,
        edge_channels: int = 256,
        dropout: float = 0.1,
        bins: Sequence[int] = (1, 2, 3, 6),
        low_upsample: Literal["bilinear", "deconv"] = "bilinear",
        token_norms: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"the CE2P head takes three levels (low, middle, deep), got {len(in_channels)}")
        if low_stride not in (4, 8, 16) or low_upsample not in ("bilinear", "deconv"):
            raise ValueError(f"low level at stride {low_stride} with {low_upsample!r}: expected stride 4, 8 "
                             "or 16 and 'bilinear' or 'deconv'")
        self.num_classes = int(num_classes)
        self.low_factor = low_stride // 4
        low_in = in_channels[0]
        self.upsample: nn.Module | None = None
        if self.low_factor > 1 and low_upsample == "deconv":
            steps: list[nn.Module] = []
            for index in range(self.low_factor.bit_length() - 1):
                steps.append(nn.ConvTranspose2d(low_in, low_in, 2, stride=2))
                if index < self.low_factor.bit_length() - 2:
                    steps += [nn.BatchNorm2d(low_in), nn.GELU()]
            self.upsample = nn.Sequential(*steps)
        # new LayerNorms on the levels' tokens (ViT only; applied by ParsingModel through hooks)
        self.token_norms = nn.ModuleList(nn.LayerNorm(c) for c in in_channels) if token_norms else None
        self.context = PyramidPooling(in_channels[2], context_channels, bins)
        self.decoder = Decoder(context_channels, low_in, low_channels, channels, self.num_classes)
        self.edge = EdgeBranch(in_channels, edge_channels)
        self.fusion = nn.Sequential(conv_bn_relu(channels + len(in_channels) * edge_channels, channels),
                                    nn.Dropout2d(dropout), nn.Conv2d(channels, self.num_classes, 1))

    def forward(self, features: Sequence[torch.Tensor]) -> CE2POutput:
        if len(features) != 3:
            raise ValueError(f"CE2P head built for 3 levels, got {len(features)}")
        low, middle, deep = features
        if self.low_factor > 1:
            if self.upsample is not None:
                low = self.upsample(low)
            else:
                low = F.interpolate(low, scale_factor=self.low_factor, mode="bilinear", align_corners=False)
        parsing, decoded = self.decoder(self.context(deep), low)
        edge, edge_features = self.edge([low, middle, deep])
        fused = self.fusion(torch.cat([decoded, edge_features], dim=1))
        return CE2POutput(parsing, fused, edge)
