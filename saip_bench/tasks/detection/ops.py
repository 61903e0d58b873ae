"""torchvision ops on the CPU-only torch: route ``roi_align`` to a separable pure-PyTorch kernel.

Why: without torchvision's C extension, ``torchvision.ops.roi_align`` falls back to a pure-PyTorch kernel
wrapped in ``torch.compile(dynamic=True)``; on our CPUs the first call compiles for tens of seconds and
shape changes recompile (a tiny Mask R-CNN step took minutes), and run eagerly it gathers a huge index.
``separable_roi_align`` computes the same bilinear samples as two matrix products per RoI. NMS is already
routed to a pure-torch kernel by ``saip_bench._compat``.
"""

from __future__ import annotations

import importlib

from torchvision.extension import _has_ops

# ``torchvision.ops.roi_align`` the attribute is the function; the module holds the fallback
roi_align_module = importlib.import_module("torchvision.ops.roi_align")
ROI_CHUNK = 64  # RoIs per matrix product in ``separable_roi_align``: bounds its (RoIs x C x PH x W) temporary


def _axis_weights(start, bin_size, grid, pooled: int, size: int, max_grid: int):
    """Per RoI, the (pooled x size) matrix that ROIAlign's bilinear samples put on one axis, summed
    over the bin's samples: sample i of bin p sits at start + p*bin + (i + 0.5) * bin / grid; a sample
    beyond [-1, size] weighs nothing; inside, it is clamped at 0 and its two neighbours share 1."""
    import torch

    dtype = start.dtype
    bins = torch.arange(pooled, device=start.device, dtype=dtype)
    samples = torch.arange(max_grid, device=start.device, dtype=dtype)
    coord = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
             + (samples[None, None, :] + 0.5) * (bin_size / grid)[:, None, None])  # (K, P, G)
    used = samples[None, None, :] < grid[:, None, None]
    inside = (coord >= -1.0) & (coord <= size) & used
    coord = coord.clamp(min=0.0)
    low = coord.floor().clamp(max=size - 1)
    at_edge = low >= size - 1
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low)
    high = torch.where(at_edge, low, low + 1)
    positions = torch.arange(size, device=start.device, dtype=dtype)
    weight = ((1.0 - frac)[..., None] * (positions == low[..., None])
              + frac[..., None] * (positions == high[..., None]))  # (K, P, G, size)
    return (weight * inside[..., None]).sum(2)  # (K, P, size)


def separable_roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """ROIAlign (torchvision's C++/CUDA kernel semantics) as two small matrix products per RoI.

    Why: bilinear sampling is separable, so each RoI's output is ``A_y @ F @ A_x^T`` with per-axis weight
    matrices; torchvision's pure-PyTorch fallback instead gathers a (RoIs x C x PH x PW x grid x grid)
    index, which dominated our CPU detection units (25 of 58 s of a Fashionpedia unit). Differentiable;
    adaptive grids (``sampling_ratio <= 0``: ceil(roi size / pooled size) samples a side) per RoI.
    """
    import torch

    dtype = input.dtype
    _, channels, height, width = input.shape
    if rois.shape[0] == 0:
        return input.new_zeros((0, channels, pooled_height, pooled_width))
    rois = rois.to(dtype)
    offset = 0.5 if aligned else 0.0
    start_x, start_y = rois[:, 1] * spatial_scale - offset, rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - start_x
    roi_h = rois[:, 4] * spatial_scale - offset - start_y
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / pooled_height, roi_w / pooled_width
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, float(sampling_ratio))
        grid_w = torch.full_like(roi_w, float(sampling_ratio))
    else:
        grid_h, grid_w = torch.ceil(roi_h / pooled_height), torch.ceil(roi_w / pooled_width)
    max_h = max(int(grid_h.max()), 1)
    max_w = max(int(grid_w.max()), 1)
    weight_y = _axis_weights(start_y, bin_h, grid_h, pooled_height, height, max_h)  # (K, PH, H)
    weight_x = _axis_weights(start_x, bin_w, grid_w, pooled_width, width, max_w)  # (K, PW, W)
    count = (grid_h * grid_w).clamp(min=1.0)
    # per image and in chunks of RoIs: gathering each RoI's whole map, (K, C, H, W), took tens of GB at
    # Mask R-CNN's P2 of a 900-px image
    image_index = rois[:, 0].long()
    order = torch.argsort(image_index, stable=True)
    pieces = []
    for chunk in order.split(ROI_CHUNK):
        for image in torch.unique_consecutive(image_index[chunk]).tolist():
            part = chunk[image_index[chunk] == image]
            pieces.append(torch.einsum("kph,chw,kqw->kcpq", weight_y[part], input[image], weight_x[part]))
    out = torch.cat(pieces)[torch.argsort(order)]
    return out / count[:, None, None, None]


torchvision_fallback = None  # torchvision's own pure-PyTorch kernel once replaced (tests compare against it)


def use_separable_roi_align() -> bool:
    """Route torchvision's pure-PyTorch RoIAlign fallback to ``separable_roi_align``; True when changed.

    Only without torchvision's C extension (with it, torchvision's own kernel runs). This also replaces the
    lazily ``torch.compile``d fallback, whose first call compiled for tens of seconds on our CPUs.
    """
    global torchvision_fallback
    if _has_ops():
        return False
    if roi_align_module._roi_align is not separable_roi_align:
        current = roi_align_module._roi_align
        torchvision_fallback = getattr(current, "__wrapped__", current)  # the eager original, for tests
        roi_align_module._roi_align = separable_roi_align
    return True


use_separable_roi_align()


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
