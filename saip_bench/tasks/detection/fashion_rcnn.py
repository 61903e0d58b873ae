"""The Fashionpedia recipe's parts (docs/tasks_multi_person.md#fashionpedia): head settings as validated data,
per-level anchors on fixed strides, and a knowledge-aware attribute head on RoI features in the manner of
KE-RCNN (its aspect-preserving multi-scale resize and padded batches: ``detection/resize.py``).

Why a module of its own: ``tasks/fashionpedia.py`` keeps the task's plumbing (records, protocols, result
files); what the recipe changes in the model lives here, testable without a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, box_iou

from saip_bench.devices import host_to_device
from saip_bench.errors import SpecError

# ---- settings as data -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttributeHeadParams(_Strict):
    """The attribute branch: ``mlp`` (RoIAlign -> MLP; the CPU protocol's) or ``knowledge`` (KE-RCNN-like)."""

    type: Literal["mlp", "knowledge"] = "mlp"
    dim: int = Field(default=256, gt=0, description="token width of the knowledge head's decoders")
    heads: int = Field(default=8, gt=0)
    layers: int = Field(default=2, gt=0, description="layers of each of the encoder / self / cross decoders")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="sigmoid probability an attribute needs")
    loss_weight: float = Field(default=1.0, gt=0)
    max_positives: int | None = Field(
        default=None, gt=0,
        description="knowledge head: positive proposals per image it trains on (None: the GT boxes, as mlp)")


class FashionHeadParams(_Strict):
    """Mask R-CNN + attribute settings of one protocol (``head.params`` overlaid by ``params.head``).

    The defaults are the CPU protocol's compact model (3-level pyramid, anchors from the input size,
    MLP box head); the ``finetune`` protocol sets the recipe's values in the spec.
    """

    channels: int = Field(default=128, gt=0)
    pyramid: Literal["simple3", "p2_p6"] = "simple3"
    anchor_scale: float | None = Field(
        default=None, gt=0,
        description="anchor base size = scale x level stride (mmdet's octave scale); None: sizes from the "
                    "input size (CPU protocol)")
    anchor_ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    box_head: Literal["mlp", "4conv1fc"] = "mlp"
    roi_sampling_ratio: int = Field(default=2, ge=0, description="RoIAlign samples a bin side; 0 = adaptive")
    rpn_pre_nms_train: int | None = Field(default=None, gt=0, description="None: 2 x rpn_post_nms_train")
    rpn_post_nms_train: int = Field(default=300, gt=0)
    rpn_pre_nms_test: int = Field(default=300, gt=0)
    rpn_post_nms_test: int = Field(default=150, gt=0)
    rpn_nms: float = Field(default=0.7, gt=0, le=1)
    box_batch_per_image: int = Field(default=128, gt=0)
    score_thresh: float = Field(default=0.0, ge=0, lt=1)
    box_nms: float = Field(default=0.5, gt=0, le=1)
    detections_per_img: int = Field(default=100, gt=0)
    attributes: AttributeHeadParams = Field(default_factory=AttributeHeadParams)




def validated(model: type[BaseModel], data: Any, where: str) -> Any:
    """``model`` from spec data; a bad field is a ``SpecError`` naming ``where`` and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                             for err in exc.errors())
        raise SpecError(f"{where}: invalid {model.__name__}: {problems}") from None


# ---- anchors --------------------------------------------------------------------------------------------


def level_anchor_sizes(scale: float, strides: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """One anchor size per level: ``scale`` x stride (mmdet's ``AnchorGenerator(scales=[s], strides)``)."""
    return tuple((round(scale * stride),) for stride in strides)


class FixedStrideAnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` on the pyramid's true strides.

    Why: torchvision infers a level's stride as padded image size // map size, which is wrong when the
    padded size is not a multiple of that stride (P6 at stride 64 on a canvas padded to 32: a 96-px side
    gives a 2-cell map and an inferred stride of 48). The anchors themselves are torchvision's.
    """

    def __init__(self, sizes: tuple[tuple[int, ...], ...], aspect_ratios: tuple[tuple[float, ...], ...],
                 strides: Sequence[int]) -> None:
        super().__init__(sizes, aspect_ratios)
        self.strides = [int(s) for s in strides]

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        grid_sizes = [fm.shape[-2:] for fm in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.empty((), dtype=torch.int64, device=device).fill_(s)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        anchors_over_all_feature_maps = self.grid_anchors(grid_sizes, strides)
        per_image = torch.cat(anchors_over_all_feature_maps)
        return [per_image for _ in range(len(image_list.image_sizes))]


# ---- knowledge-aware attribute head ---------------------------------------------------------------------


def knowledge_matrix(records: Sequence[dict[str, Any]], num_categories: int,
                     num_attributes: int) -> torch.Tensor:
    """(categories x attributes) co-occurrence prior of the training annotations: the share of a category's
    instances that carry each attribute. KE-RCNN reads such a matrix from a file built from the training
    set; ours is built from the records the unit trains on."""
    counts = np.zeros((num_categories, num_attributes), dtype=np.float64)
    instances = np.zeros(num_categories, dtype=np.float64)
    for record in records:
        for ann in record["annotations"]:
            category = int(ann["category_id"])
            instances[category] += 1
            for index in ann.get("attribute_indices", []):
                counts[category, int(index)] += 1
    return torch.from_numpy(counts / np.maximum(instances, 1)[:, None]).float()


def chosen_attributes(probs: torch.Tensor, threshold: float) -> list[list[int]]:
    """Per instance, the attribute indices whose probability exceeds ``threshold`` (strictly, as mmdet's
    ``scores > thr``)."""
    return [torch.nonzero(row > threshold).flatten().tolist() for row in probs]


def sample_positives(
    proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], iou: float, max_per_image: int,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Attribute training RoIs: proposals (GT boxes appended, as the box head samples) with IoU >= ``iou``
    to a GT box, at most ``max_per_image`` per image drawn at random. Returns the boxes per image and the
    matched GT labels and multi-hot attributes."""
    boxes, labels, attributes = [], [], []
    for found, target in zip(proposals, targets, strict=True):
        gt = target["boxes"]
        if len(gt) == 0:
            boxes.append(gt.new_zeros((0, 4)))
            continue
        candidates = torch.cat([found.detach(), gt])
        best, matched = box_iou(candidates, gt).max(dim=1)
        positive = torch.nonzero(best >= iou).flatten()
        positive = positive[torch.randperm(len(positive), device=positive.device)[:max_per_image]]
        boxes.append(candidates[positive])
        labels.append(target["labels"][matched[positive]])
        attributes.append(target["attributes"][matched[positive]])
    empty = proposals[0].new_zeros((0,))
    return (boxes, torch.cat(labels) if labels else empty.long(),
            torch.cat(attributes) if attributes else empty.reshape(0, 0))


def per_box_context(context: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
    """Each box's row of its image's ``context`` (one row per image), in box order.

    Why expanded, not indexed with each box's image index: the backward of an index that repeats sums
    with atomic adds across CPU threads (``index_put_``), in an order that changes the rounding, so two
    same-seed fine-tunes on 2 threads differed from step 2 (``saip_bench/profiling/races.py``)."""
    rows = context.split(1)
    return torch.cat([row.expand(len(b), *row.shape[1:]) for row, b in zip(rows, boxes, strict=True)])


class KnowledgeAttributeHead(nn.Module):
    """Attribute logits from RoI features, box geometry and a category -> attribute prior (KE-RCNN's design,
    docs/tasks_multi_person.md#fashionpedia; an approximation where the recipe's parts are not ours).

    - visual tokens: the instance's 7x7 RoI features; half of the channels through a 3x3 conv, the other
      half through a cross-attention encoder onto the context RoI (KE-RCNN: the person box; the release has
      none, so the whole image stands in);
    - a geometry token (the box, normalised by the image size) and a category token (the category's row of
      the knowledge matrix, with its label embedding);
    - one query per attribute (a learned weight vector passed through an FFN), zeroed where the category
      never carries that attribute in the prior; a self-attention decoder over all tokens, then a
      cross-attention decoder from the queries to the other tokens;
    - logit of attribute a = <weight_a, decoded query_a>.
    """

    def __init__(self, channels: int, num_attributes: int, knowledge: torch.Tensor, names: list[str],
                 sampling_ratio: int = 0, dim: int = 256, heads: int = 8, layers: int = 2) -> None:
        super().__init__()
        self.num_attributes = num_attributes
        self.pool = MultiScaleRoIAlign(names, 7, sampling_ratio)
        self.register_buffer("knowledge", knowledge.float().clone())  # (categories, attributes)
        half = channels // 2
        groups = math.gcd(4, half) or 1
        self.local = nn.Sequential(nn.Conv2d(half, half, 3, padding=1), nn.GroupNorm(groups, half), nn.ReLU())
        rest = channels - half
        self.context_in = nn.Sequential(nn.Conv2d(channels, rest, 1), nn.GroupNorm(math.gcd(4, rest), rest),
                                        nn.ReLU())
        context_heads = math.gcd(heads, channels - half)
        self.context = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(channels - half, context_heads, 2 * channels, dropout=0.0,
                                       batch_first=True), layers)
        self.visual = nn.Linear(channels, dim)
        self.position = nn.Parameter(torch.zeros(1, 49, dim))
        self.geometry = nn.Linear(4, dim)
        self.category = nn.Sequential(nn.Linear(num_attributes, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(knowledge.shape[0], dim)
        self.weight = nn.Parameter(torch.empty(num_attributes, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.query = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(), nn.Linear(dim, dim),
                                   nn.LayerNorm(dim))
        self.self_decoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True), layers)
        self.cross_decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True), layers)

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], labels: torch.Tensor,
                sizes: list[tuple[int, int]]) -> torch.Tensor:
        """(instances x attributes) logits for ``boxes`` (per image) of 0-based category ``labels``."""
        count = sum(len(b) for b in boxes)
        if count == 0:
            return self.weight.new_zeros((0, self.num_attributes))
        rois = self.pool(features, boxes, sizes)  # (N, C, 7, 7)
        # the host-side numbers (image sizes, box counts) reach the device without a blocking copy or a
        # data-dependent repeat: one queued copy per table, and the image index of each box built there
        corners = torch.tensor([[0.0, 0.0, w, h] for h, w in sizes], dtype=boxes[0].dtype)
        whole = list(host_to_device(corners, boxes[0].device).split(1))
        context = self.context_in(self.pool(features, whole, sizes))  # (images, C - half, 7, 7)
        per_image = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=rois.device)
                               for i, b in enumerate(boxes)])
        half = rois.shape[1] // 2
        local = self.local(rois[:, :half])
        related = self.context(rois[:, half:].flatten(2).transpose(1, 2),  # (N, 49, C - half)
                               per_box_context(context, boxes).flatten(2).transpose(1, 2))
        tokens = torch.cat([local.flatten(2).transpose(1, 2), related], dim=2)
        visual = self.visual(tokens) + self.position
        scale = host_to_device(torch.tensor([[w, h, w, h] for h, w in sizes], dtype=rois.dtype), rois.device)
        geometry = self.geometry(torch.cat(boxes) / scale[per_image]).unsqueeze(1)
        prior = self.knowledge[labels]  # (N, A)
        category = (self.category(prior) + self.label(labels)).unsqueeze(1)
        queries = (prior > 0).to(visual.dtype).unsqueeze(-1) * self.query(self.weight).unsqueeze(0)
        memory = self.self_decoder(torch.cat([visual, category, geometry, queries], dim=1))
        decoded = self.cross_decoder(memory[:, -self.num_attributes:], memory[:, :-self.num_attributes])
        return (decoded * self.weight.unsqueeze(0)).sum(-1)


def attribute_loss(logits: torch.Tensor, wanted: torch.Tensor, weight: float) -> torch.Tensor:
    """Mean binary cross-entropy over instances x attributes, times the recipe's loss weight."""
    return weight * F.binary_cross_entropy_with_logits(logits.float(), wanted.float())
