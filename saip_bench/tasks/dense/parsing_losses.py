"""The CE2P/SCHP parsing losses: Lovász-softmax, edge targets from a label map, and their weighted sum.

Why by hand: no maintained package installed here ships the Lovász-softmax (Berman et al., CVPR 2018);
it is short, and ``tests/tasks/dense/test_parsing_losses.py`` checks it against a case computed by hand.
The recipe (docs/tasks_dense.md, "LIP recipe"): for each parsing output 0.5 Lovász + 0.5 cross-entropy
(ignore 255), plus a class-balanced cross-entropy on the edge output against edges derived from the
label map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE = 255


def lovasz_grad(sorted_errors_labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order.

    ``sorted_errors_labels`` is the 0/1 ground truth of one class, in the order of decreasing error.
    """
    gts = sorted_errors_labels.sum()
    intersection = gts - sorted_errors_labels.cumsum(0)
    union = gts + (1.0 - sorted_errors_labels).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(jaccard) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE,
    classes: Literal["present", "all"] = "present",
) -> torch.Tensor:
    """Lovász-softmax loss over a batch, pixels pooled (not per image), as CE2P/SCHP train.

    ``probabilities``: (B, C, H, W) softmax outputs; ``labels``: (B, H, W) class ids. ``present``
    averages over the classes that occur in the (non-ignored) labels, ``all`` over every class.
    Returns 0 (with a gradient path) when every pixel is ignored.
    """
    channels = probabilities.shape[1]
    flat = probabilities.permute(0, 2, 3, 1).reshape(-1, channels)
    target = labels.reshape(-1)
    keep = target != ignore_index
    flat, target = flat[keep], target[keep].long()
    if target.numel() == 0:
        return probabilities.sum() * 0.0
    losses = []
    for cls in range(channels):
        foreground = (target == cls).to(flat.dtype)
        if classes == "present" and foreground.sum() == 0:
            continue
        errors = (foreground - flat[:, cls]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(foreground[order])))
    if not losses:
        return probabilities.sum() * 0.0
    return torch.stack(losses).mean()


def edge_targets(labels: torch.Tensor, width: int = 3, ignore_index: int = IGNORE) -> torch.Tensor:
    """(B, H, W) 0/1 edge map of (B, H, W) label maps, as the recipe derives its edge supervision.

    A pixel is marked where its label differs from the pixel below, to the right, below-right or
    below-left (neither of the two ignored); the marks are then dilated by a ``width`` x ``width`` box.
    """
    lab = labels.long()
    if lab.dim() == 2:
        lab = lab[None]
    edge = torch.zeros(lab.shape, dtype=torch.bool, device=lab.device)

    def mark(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a != b) & (a != ignore_index) & (b != ignore_index)

    edge[:, 1:, :] |= mark(lab[:, 1:, :], lab[:, :-1, :])
    edge[:, :, :-1] |= mark(lab[:, :, :-1], lab[:, :, 1:])
    edge[:, :-1, :-1] |= mark(lab[:, :-1, :-1], lab[:, 1:, 1:])
    edge[:, :-1, 1:] |= mark(lab[:, :-1, 1:], lab[:, 1:, :-1])
    if width > 1:
        dilated = F.max_pool2d(edge[:, None].float(), width, stride=1, padding=width // 2)
        edge = dilated[:, 0, : lab.shape[1], : lab.shape[2]] > 0
    return edge.to(torch.long)


def balanced_edge_loss(edge_logits: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on (B, 2, H, W) edge logits, each class weighted by the other's pixel share (the
    recipe's balance: edges are a few percent of the pixels)."""
    positives = edges.sum().float()
    total = float(edges.numel())
    weights = torch.stack([positives / total, (total - positives) / total]).to(edge_logits.dtype)
    if positives == 0 or positives == total:  # one class only: its weight would be 0 (a 0/0 mean)
        weights = torch.ones(2, dtype=edge_logits.dtype)
    return F.cross_entropy(edge_logits, edges, weight=weights.to(edge_logits.device))


def ce2p_loss(
    parsing_outputs: Sequence[torch.Tensor],
    edge_logits: torch.Tensor | None,
    labels: torch.Tensor,
    lovasz_weight: float = 0.5,
    ce_weight: float = 0.5,
    edge_weight: float = 1.0,
    ignore_index: int = IGNORE,
) -> torch.Tensor:
    """Sum over parsing outputs of ``lovasz_weight`` Lovász + ``ce_weight`` CE, plus ``edge_weight`` x the
    balanced edge loss; every output is upsampled (bilinear) to the label size first."""
    size = labels.shape[-2:]
    target = labels.long()
    total = parsing_outputs[0].new_zeros(())
    for logits in parsing_outputs:
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        if lovasz_weight:
            total = total + lovasz_weight * lovasz_softmax(logits.softmax(1), target, ignore_index)
        if ce_weight:
            total = total + ce_weight * F.cross_entropy(logits, target, ignore_index=ignore_index)
    if edge_logits is not None and edge_weight:
        edges = F.interpolate(edge_logits.float(), size=size, mode="bilinear", align_corners=False)
        targets = edge_targets(target, ignore_index=ignore_index)
        total = total + edge_weight * balanced_edge_loss(edges, targets)
    return total
