"""torchvision ops on the CPU-only torch: route ``roi_align`` to its eager pure-PyTorch kernel.

Why: without torchvision's C extension, ``torchvision.ops.roi_align`` falls back to a pure-PyTorch kernel
wrapped in ``torch.compile(dynamic=True)``; on our CPUs the first call compiles for tens of seconds and
shape changes recompile (a tiny Mask R-CNN step took minutes). The same function run eagerly is exact
and fast enough at our sizes. NMS is already routed to a pure-torch kernel by ``saip_bench._compat``.
"""

from __future__ import annotations

import importlib

from torchvision.extension import _has_ops

# ``torchvision.ops.roi_align`` the attribute is the function; the module holds the fallback
roi_align_module = importlib.import_module("torchvision.ops.roi_align")


def use_eager_roi_align() -> bool:
    """Replace the lazily compiled fallback by its eager original; True when a change was made."""
    if _has_ops():  # a working C extension: torchvision uses its own kernel, nothing to do
        return False
    fallback = roi_align_module._roi_align
    eager = getattr(fallback, "__wrapped__", None)
    if eager is None:
        return False
    roi_align_module._roi_align = eager
    return True


use_eager_roi_align()


def _project_masks_on_boxes_2x2(gt_masks, boxes, matched_idxs, discretization_size):
    """Mask R-CNN's mask targets with a fixed 2x2 sampling grid per bin (torchvision: adaptive grid).

    Why: the adaptive grid is ceil(largest box / 28) samples a side for *every* RoI; the eager kernel then
    allocates (RoIs x 28 x 28 x grid^2) and one training step took over a minute. 2x2 bilinear samples per
    bin are what the feature RoIAlign uses too; targets differ only by sub-bin smoothing.
    """
    import torch
    from torchvision.ops import roi_align

    matched_idxs = matched_idxs.to(boxes)
    rois = torch.cat([matched_idxs[:, None], boxes], dim=1)
    gt_masks = gt_masks[:, None].to(rois)
    return roi_align(gt_masks, rois, (discretization_size, discretization_size), 1.0, sampling_ratio=2)[:, 0]


def use_fixed_grid_mask_targets() -> bool:
    """Route torchvision's ``project_masks_on_boxes`` to the 2x2-grid version (only without the C ops)."""
    if _has_ops():
        return False
    roi_heads = importlib.import_module("torchvision.models.detection.roi_heads")
    roi_heads.project_masks_on_boxes = _project_masks_on_boxes_2x2
    return True


use_fixed_grid_mask_targets()
