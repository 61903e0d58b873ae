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


def lovasz_plan(labels: torch.Tensor, channels: int, ignore_index: int = IGNORE) -> tuple[int, list[int]]:
    """(pixels not ignored, classes present) of ``labels``, read from the device in one go.

    Why: ``lovasz_softmax`` needs both on the host (the loop over present classes, the length of the
    kept pixels); asking per class and compacting by a mask index stopped a GPU's host about 20 times
    per output per step. Compute it once per batch and pass it to every output's ``lovasz_softmax``.
    """
    target = labels.reshape(-1)
    ignored = target == ignore_index
    bins = torch.where(ignored | (target >= channels) | (target < 0), channels, target.long())
    counts = torch.zeros(channels + 1, dtype=torch.long, device=target.device)
    counts.scatter_add_(0, bins, torch.ones_like(bins))
    values = torch.cat([counts[:channels], ignored.sum()[None]]).tolist()
    return target.numel() - int(values[-1]), [cls for cls in range(channels) if values[cls] > 0]


def kept_indices(ignored: torch.Tensor, kept: int) -> torch.Tensor:
    """The ascending positions of the ``kept`` entries of 1-D ``ignored`` that are False, what
    ``(~ignored).nonzero()`` gives, built with their count known (a rank by cumsum, scattered): no host
    read and no data-dependent shape. Ignored entries all land in one spare slot, dropped."""
    keep = ~ignored
    slot = torch.where(keep, keep.cumsum(0) - 1, kept)
    positions = torch.arange(ignored.numel(), device=ignored.device)
    return torch.empty(kept + 1, dtype=torch.long, device=ignored.device).scatter_(0, slot, positions)[:kept]


def lovasz_softmax(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE,
    classes: Literal["present", "all"] = "present",
    plan: tuple[int, list[int]] | None = None,
) -> torch.Tensor:
    """Lovász-softmax loss over a batch, pixels pooled (not per image), as CE2P/SCHP train.

    ``probabilities``: (B, C, H, W) softmax outputs; ``labels``: (B, H, W) class ids. ``present``
    averages over the classes that occur in the (non-ignored) labels, ``all`` over every class.
    Returns 0 (with a gradient path) when every pixel is ignored. ``plan``: ``lovasz_plan(labels, C,
    ignore_index)``, computed here when not given (one host read); with it the loss reads nothing back
    and has no data-dependent shapes (the kept pixels are gathered by ``kept_indices``).
    """
    channels = probabilities.shape[1]
    flat = probabilities.permute(0, 2, 3, 1).reshape(-1, channels)
    target = labels.reshape(-1)
    kept, present = plan if plan is not None else lovasz_plan(labels, channels, ignore_index)
    if kept == 0:
        return probabilities.sum() * 0.0
    if kept < target.numel():
        index = kept_indices(target == ignore_index, kept)
        flat, target = flat.index_select(0, index), target.index_select(0, index)
    target = target.long()
    losses = []
    for cls in present if classes == "present" else range(channels):
        foreground = (target == cls).to(flat.dtype)
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
    # one class only: its weight would be 0 (a 0/0 mean); chosen on the device, not by a host read
    weights = torch.where((positives == 0) | (positives == total), 1.0, weights)
    return F.cross_entropy(edge_logits, edges, weight=weights.to(edge_logits.device))


def ce2p_loss(
    parsing_outputs: Sequence[torch.Tensor],
    edge_logits: torch.Tensor | None,
    labels: torch.Tensor,
    lovasz_weight: float = 0.5,
    ce_weight: float = 0.5,
    edge_weight: float = 1.0,
    ignore_index: int = IGNORE,
    plan: tuple[int, list[int]] | None = None,
) -> torch.Tensor:
    """Sum over parsing outputs of ``lovasz_weight`` Lovász + ``ce_weight`` CE, plus ``edge_weight`` x the
    balanced edge loss; every output is upsampled (bilinear) to the label size first. ``plan``: the
    labels' ``lovasz_plan`` when the caller has it (the parsing loader computes it on the host); else it
    is read from the device once, for every output."""
    size = labels.shape[-2:]
    target = labels.long()
    total = parsing_outputs[0].new_zeros(())
    if lovasz_weight and plan is None:
        plan = lovasz_plan(target, parsing_outputs[0].shape[1], ignore_index)
    for logits in parsing_outputs:
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        if lovasz_weight:
            total = total + lovasz_weight * lovasz_softmax(logits.softmax(1), target, ignore_index, plan=plan)
        if ce_weight:
            total = total + ce_weight * F.cross_entropy(logits, target, ignore_index=ignore_index)
    if edge_logits is not None and edge_weight:
        edges = F.interpolate(edge_logits.float(), size=size, mode="bilinear", align_corners=False)
        targets = edge_targets(target, ignore_index=ignore_index)
        total = total + edge_weight * balanced_edge_loss(edges, targets)
    return total
