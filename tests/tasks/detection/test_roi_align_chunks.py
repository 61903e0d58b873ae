"""The separable RoIAlign computes per image and in chunks of RoIs (no per-RoI copy of the map): RoIs of
interleaved images split over several chunks give torchvision's values and gradients in the input order."""

from __future__ import annotations

import torch

import saip_bench  # noqa: F401  (torchvision ops shim)
from saip_bench.tasks.detection import ops


def test_chunks_across_interleaved_images_keep_values_gradients_and_order(monkeypatch):
    monkeypatch.setattr(ops, "ROI_CHUNK", 5)
    reference = ops.torchvision_fallback or torch.ops.torchvision.roi_align
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(3, 4, 11, 9, generator=generator, dtype=torch.float64)
    corners = torch.rand(17, 2, generator=generator, dtype=torch.float64) * torch.tensor([30.0, 36.0])
    sizes = torch.rand(17, 2, generator=generator, dtype=torch.float64) * 8 + 1
    boxes = torch.cat([corners, corners + sizes], 1)
    images = torch.tensor([2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 2, 1, 0, 0, 2, 1, 2], dtype=torch.float64)
    rois = torch.cat([images[:, None], boxes], 1)
    ours_in = features.clone().requires_grad_(True)
    theirs_in = features.clone().requires_grad_(True)
    ours = ops.separable_roi_align(ours_in, rois, 0.25, 3, 4, 0, True)
    theirs = reference(theirs_in, rois, 0.25, 3, 4, 0, True)
    assert torch.allclose(ours, theirs, atol=1e-10)
    weights = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.allclose(ours_in.grad, theirs_in.grad, atol=1e-10)
