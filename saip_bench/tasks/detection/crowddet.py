"""CrowdDet (Chu et al., "Detection in Crowded Scenes: One Proposal, Multiple Predictions") from torchvision's
detection parts: a P2-P6 pyramid, torchvision's RPN, ``MultiScaleRoIAlign`` and box coder, and the pieces
torchvision does not have, written here because no maintained package offers them on our stack:

- a multi-instance RoI head: each proposal predicts K boxes (K = 2 in the recipe), each with its own
  softmax score and box deltas, optionally followed by CrowdDet's refinement module;
- the EMD loss: the K predictions are matched to the proposal's K highest-IoU ground truths under the
  permutation with the lowest total loss (``emd_loss``);
- set NMS: boxes predicted by the same proposal never suppress each other (``set_nms``).

Ignore regions (``mask`` boxes, persons with ``extra.ignore``) stay out of training: RPN anchors that are
background but mostly (IoA > 0.5) inside an ignore region are neither positives nor negatives, and a
proposal whose best overlap is with an ignore region is never sampled as background (CrowdDet's rule:
IoU with persons, IoA with ignore regions). docs/method.md and docs/tasks_multi_person.md describe the
recipe this follows.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign, box_iou, clip_boxes_to_image

from saip_bench.tasks.detection.pyramid import SimpleFeaturePyramid, fp32_heads

Targets = list[dict[str, torch.Tensor]]

ROI_LEVELS = ["0", "1", "2", "3"]  # P2-P5 (torchvision's FPN names); P6 ("pool") feeds the RPN only


def crowddet_anchor_generator(base_size: float = 32.0,
                              aspect_ratios: tuple[float, ...] = (1.0, 2.0, 3.0),
                              num_levels: int = 5) -> AnchorGenerator:
    """One anchor size per pyramid level, ``base_size * 2**level`` (32 to 512 px on P2-P6: mmdet's anchor
    scale 8 times strides 4-64), each with the recipe's height/width ratios (persons are tall)."""
    sizes = tuple((float(base_size) * 2**level,) for level in range(num_levels))
    return AnchorGenerator(sizes, (tuple(float(r) for r in aspect_ratios),) * num_levels)


def region_ioa(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(N, M) fraction of each box's area inside each region (x1y1x2y2 both)."""
    lt = torch.maximum(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    return inter / area.clamp(min=1e-6)[:, None]


class SeededSampler(BalancedPositiveNegativeSampler):
    """torchvision's balanced positive/negative sampler drawing from per-image seeds when given.

    Why: the draws must not depend on which process (rank) or in which micro-batch order an image is
    seen, so a data-parallel unit matches one process with the same effective batch; the task seeds each
    image from (its index, the epoch). Without seeds it draws from the global generator as torchvision does.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        super().__init__(batch_size_per_image, positive_fraction)
        self.seeds: list[int] | None = None

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.seeds is None:
            return super().__call__(matched_idxs)
        positives, negatives = [], []
        for labels, seed in zip(matched_idxs, self.seeds, strict=True):
            generator = torch.Generator().manual_seed(int(seed))
            positive = torch.where(labels >= 1)[0]
            negative = torch.where(labels == 0)[0]
            n_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            n_neg = min(negative.numel(), self.batch_size_per_image - n_pos)
            pos_order = torch.randperm(positive.numel(), generator=generator)[:n_pos]
            neg_order = torch.randperm(negative.numel(), generator=generator)[:n_neg]
            chosen_pos = positive[pos_order.to(labels.device)]
            chosen_neg = negative[neg_order.to(labels.device)]
            pos_mask = torch.zeros_like(labels, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
            pos_mask[chosen_pos] = 1
            neg_mask[chosen_neg] = 1
            positives.append(pos_mask)
            negatives.append(neg_mask)
        return positives, negatives


class IgnoreAwareRPN(RegionProposalNetwork):
    """torchvision's RPN whose background anchors inside ignore regions (IoA > 0.5) leave the loss."""

    ignore_ioa = 0.5

    def assign_targets_to_anchors(self, anchors, targets):  # type: ignore[override]
        labels, matched = super().assign_targets_to_anchors(anchors, targets)
        for anchors_per_image, target, label in zip(anchors, targets, labels, strict=True):
            ignore = target.get("ignore")
            if ignore is not None and ignore.numel():
                inside = region_ioa(anchors_per_image, ignore).max(dim=1).values > self.ignore_ioa
                label.masked_fill_((label == 0) & inside, -1.0)  # not a mask index: no host sync
        return labels, matched


def emd_loss(class_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
             box_targets: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """CrowdDet's EMD loss, mean over proposals.

    Shapes: logits (N, K, C), deltas (N, K, 4), labels (N, K) (0 background, c > 0 a class), targets
    (N, K, 4). For each proposal and each permutation of its K predictions, the cost is the sum over the K
    slots of softmax cross-entropy plus, on foreground slots, smooth-L1 of the deltas; the loss takes the
    cheapest permutation, so the set of predictions is matched to the set of ground truths (K! terms;
    K = 2 in the recipe).
    """
    n, k, classes = class_logits.shape
    foreground = (labels > 0).to(box_deltas.dtype)
    costs = []
    for order in itertools.permutations(range(k)):
        # slots picked one by one: a list index would be copied to the device (and waited for) each time
        logits = torch.stack([class_logits[:, slot] for slot in order], dim=1)
        deltas = torch.stack([box_deltas[:, slot] for slot in order], dim=1)
        classification = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1),
                                         reduction="none").view(n, k)
        regression = F.smooth_l1_loss(deltas, box_targets, beta=beta, reduction="none").sum(-1) * foreground
        costs.append((classification + regression).sum(dim=1))
    if n == 0:
        return class_logits.sum() * 0.0
    return torch.stack(costs, dim=1).min(dim=1).values.mean()


def set_nms(boxes: torch.Tensor, scores: torch.Tensor, set_ids: torch.Tensor,
            iou_threshold: float) -> torch.Tensor:
    """Greedy NMS in which boxes of the same set (the same proposal) never suppress each other.

    Returns the kept indices, highest score first. Why by hand: torchvision's ``batched_nms`` does the
    opposite (only boxes of the same group interact); CrowdDet's rule needs every cross-set pair.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    ordered, ids = boxes[order], set_ids[order]
    suppresses = ((box_iou(ordered, ordered) > iou_threshold) & (ids[:, None] != ids[None, :]))
    suppresses = suppresses.cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= suppresses[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


class MultiInstanceHead(nn.Module):
    """RoI features -> two shared FC layers -> K (softmax scores, box deltas) per proposal; with ``refine``,
    CrowdDet's refinement module: each first prediction (its deltas and person score, repeated 4x) joins the
    shared feature in one more FC layer that predicts again."""

    def __init__(self, in_features: int, representation: int = 1024, instances: int = 2,
                 num_classes: int = 2, refine: bool = False) -> None:
        super().__init__()
        self.instances = instances
        self.num_classes = num_classes
        self.refine = refine
        self.mlp = TwoMLPHead(in_features, representation)
        self.cls = nn.Linear(representation, instances * num_classes)
        self.delta = nn.Linear(representation, instances * 4)
        if refine:
            self.refine_fc = nn.Linear(representation + 20, representation)
            self.refine_cls = nn.Linear(representation, num_classes)
            self.refine_delta = nn.Linear(representation, 4)
        for layer, std in ((self.cls, 0.01), (self.delta, 0.001)) + (
                ((self.refine_cls, 0.01), (self.refine_delta, 0.001)) if refine else ()):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Returns [(logits (N, K, C), deltas (N, K, 4))]: the first predictions, then the refined ones."""
        shared = self.mlp(features)
        n = shared.shape[0]
        logits = self.cls(shared).view(n, self.instances, self.num_classes)
        deltas = self.delta(shared).view(n, self.instances, 4)
        outputs = [(logits, deltas)]
        if self.refine:
            person = logits.softmax(-1)[..., 1:2]
            cue = torch.cat([deltas, person], dim=-1).repeat(1, 1, 4)  # (N, K, 20)
            per_instance = shared[:, None].expand(-1, self.instances, -1)
            refined = F.relu(self.refine_fc(torch.cat([per_instance, cue], dim=-1)))
            outputs.append((self.refine_cls(refined), self.refine_delta(refined)))
        return outputs


class CrowdDet(nn.Module):
    """P2-P6 pyramid + RPN + multi-instance RoI head (1 class), driven by backbone maps.

    Images arrive resized with their aspect kept and padded (bottom / right) to ``padded_hw``; each
    image's own resized size bounds its proposals and boxes. ``losses`` and ``detect`` take the backbone
    maps so that the frozen protocol can feed cached maps.
    """

    def __init__(self, in_channels: list[int], single_scale: bool, levels: list[int], channels: int = 256,
                 instances: int = 2, refine: bool = False, anchor_size: float = 32.0,
                 aspect_ratios: tuple[float, ...] = (1.0, 2.0, 3.0),
                 rpn_pre_nms: tuple[int, int] = (2400, 1200), rpn_post_nms: tuple[int, int] = (2000, 1000),
                 rois_per_image: int = 512,
                 positive_fraction: float = 0.5, fg_iou: float = 0.5, score_thresh: float = 0.01,
                 nms_thresh: float = 0.5, detections_per_img: int = 500, representation: int = 1024) -> None:
        super().__init__()
        self.levels = levels
        self.instances = instances
        self.fg_iou = fg_iou
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.neck = SimpleFeaturePyramid(in_channels, channels, single_scale, num_levels=5)
        anchors = crowddet_anchor_generator(anchor_size, aspect_ratios)
        self.rpn = IgnoreAwareRPN(
            anchors, RPNHead(channels, anchors.num_anchors_per_location()[0]), fg_iou_thresh=0.7,
            bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
            pre_nms_top_n={"training": rpn_pre_nms[0], "testing": rpn_pre_nms[1]},
            post_nms_top_n={"training": rpn_post_nms[0], "testing": rpn_post_nms[1]}, nms_thresh=0.7)
        self.roi_pool = MultiScaleRoIAlign(ROI_LEVELS, 7, 2)
        self.head = MultiInstanceHead(channels * 49, representation, instances, 2, refine)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.rpn.fg_bg_sampler = SeededSampler(256, 0.5)
        self.sampler = SeededSampler(rois_per_image, positive_fraction)

    # ---- shared --------------------------------------------------------------------------------
    def _proposals(self, maps: list[torch.Tensor], image_sizes: list[tuple[int, int]],
                   padded_hw: tuple[int, int], targets: Targets | None):
        features = self.neck(maps)
        batch = maps[0].shape[0]
        canvas = maps[0].new_zeros((batch, 1, *padded_hw)).expand(batch, 3, *padded_hw)
        images = ImageList(canvas, [tuple(s) for s in image_sizes])
        proposals, rpn_losses = self.rpn(images, features, targets)
        return features, proposals, rpn_losses

    def _roi_outputs(self, features: OrderedDict[str, torch.Tensor], boxes: list[torch.Tensor],
                     padded_hw: tuple[int, int]):
        pooled = self.roi_pool(features, boxes, [tuple(padded_hw)] * len(boxes))
        return self.head(pooled)

    # ---- training ------------------------------------------------------------------------------
    def sample_rois(self, proposals: torch.Tensor, target: dict[str, torch.Tensor]):
        """CrowdDet's RoI targets for one image: proposals + GT boxes, each matched to its K best persons.

        Overlap is IoU with persons and IoA with ignore regions; where an ignore region overlaps more than
        any person and no person reaches ``fg_iou``, the ignore overlap counts, so such a RoI is neither
        foreground nor (when the IoA is >= ``fg_iou``) background. Foreground/background is decided on the
        first slot and sampled by torchvision's balanced sampler. Returns (rois, labels (R, K),
        regression targets (R, K, 4)).
        """
        gt = target["boxes"]
        ignore = target.get("ignore", gt.new_zeros((0, 4)))
        rois = torch.cat([proposals, gt]) if gt.numel() else proposals
        k = self.instances
        normal = box_iou(rois, gt) if gt.numel() else rois.new_zeros((len(rois), 0))
        ignored = region_ioa(rois, ignore) if ignore.numel() else rois.new_zeros((len(rois), 0))
        pad = max(0, k - normal.shape[1])
        normal = F.pad(normal, (0, pad))
        ignored = F.pad(ignored, (0, max(0, k - ignored.shape[1])))
        best_normal, which = normal.topk(k, dim=1)
        best_ignored = ignored.topk(k, dim=1).values
        by_ignore = (best_normal < self.fg_iou) & (best_ignored > best_normal)
        overlap = torch.where(by_ignore, best_ignored, best_normal)
        foreground = (overlap >= self.fg_iou) & ~by_ignore
        background = overlap < self.fg_iou
        first_slot = torch.where(foreground[:, 0], 1, torch.where(background[:, 0], 0, -1))
        self.sampler.seeds = [int(target["seed"]) + 1] if "seed" in target else None
        positive, negative = self.sampler([first_slot])
        keep = torch.where(positive[0] | negative[0])[0]
        labels = foreground[keep].long()
        matched = torch.cat([gt, gt.new_zeros((pad, 4))])[which[keep]]  # pad columns: zero boxes, label 0
        sampled = rois[keep]
        references = sampled[:, None].expand(-1, k, -1)
        matched = torch.where(labels[..., None] > 0, matched, references)  # background slots: zero targets
        deltas = self.box_coder.encode_single(matched.reshape(-1, 4), references.reshape(-1, 4))
        return sampled, labels, deltas.view(-1, k, 4)

    @fp32_heads
    def losses(self, maps: list[torch.Tensor], targets: Targets, image_sizes: list[tuple[int, int]],
               padded_hw: tuple[int, int]) -> torch.Tensor:
        """RPN (objectness BCE + smooth-L1, torchvision's) + the EMD loss of every head output."""
        targets = [{k: v.to(maps[0].device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
                   for t in targets]
        seeded = all("seed" in t for t in targets)
        self.rpn.fg_bg_sampler.seeds = [int(t["seed"]) for t in targets] if seeded else None
        features, proposals, rpn_losses = self._proposals(maps, image_sizes, padded_hw, targets)
        samples = [self.sample_rois(p.detach(), t) for p, t in zip(proposals, targets, strict=True)]
        rois = [s[0] for s in samples]
        labels = torch.cat([s[1] for s in samples])
        box_targets = torch.cat([s[2] for s in samples])
        head_loss = sum(emd_loss(logits, deltas, labels, box_targets)
                        for logits, deltas in self._roi_outputs(features, rois, padded_hw))
        return rpn_losses["loss_objectness"] + rpn_losses["loss_rpn_box_reg"] + head_loss

    # ---- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    @fp32_heads
    def detect(self, maps: list[torch.Tensor], image_sizes: list[tuple[int, int]],
               padded_hw: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (x1y1x2y2 in the resized image), ``scores`` and ``proposal`` (its set id),
        after the score threshold, set NMS and the detection cap."""
        features, proposals, _ = self._proposals(maps, image_sizes, padded_hw, None)
        logits, deltas = self._roi_outputs(features, proposals, padded_hw)[-1]
        scores = logits.softmax(-1)[..., 1]
        counts = [len(p) for p in proposals]
        results = []
        for image_proposals, image_scores, image_deltas, size in zip(
                proposals, scores.split(counts), deltas.split(counts), image_sizes, strict=True):
            k = self.instances
            boxes = self.box_coder.decode_single(image_deltas.reshape(-1, 4),
                                                 image_proposals[:, None].expand(-1, k, -1).reshape(-1, 4))
            boxes = clip_boxes_to_image(boxes, tuple(size))
            flat_scores = image_scores.reshape(-1)
            set_ids = torch.arange(len(image_proposals), device=boxes.device).repeat_interleave(k)
            wide = (boxes[:, 2] - boxes[:, 0] > 1e-2) & (boxes[:, 3] - boxes[:, 1] > 1e-2)
            keep = torch.where((flat_scores >= self.score_thresh) & wide)[0]
            kept = keep[set_nms(boxes[keep], flat_scores[keep], set_ids[keep], self.nms_thresh)]
            kept = kept[:self.detections_per_img]
            results.append({"boxes": boxes[kept], "scores": flat_scores[kept], "proposal": set_ids[kept]})
        return results
