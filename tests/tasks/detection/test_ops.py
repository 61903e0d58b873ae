"""The torchvision ops the detectors rely on, on our CPU-only torch: nms, batched_nms, roi_align, pyramid."""

from __future__ import annotations

import pytest
import torch

from saip_bench.tasks.detection import ops  # first: installs the torchvision CPU shim
from saip_bench.tasks.detection.pyramid import SimpleFeaturePyramid, scale_boxes


def test_nms_and_batched_nms():
    from torchvision.ops import batched_nms, nms

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1, 2]


def test_roi_align_is_exact_on_a_linear_ramp():
    from torchvision.ops import roi_align

    # bilinear sampling of f(x, y) = x reproduces the mean x of each bin exactly
    image = torch.arange(16.0).repeat(16, 1)[None, None]
    out = roi_align(image, [torch.tensor([[0.0, 0, 8, 8]])], (2, 2), 1.0, sampling_ratio=2, aligned=True)
    assert torch.allclose(out[0, 0], torch.tensor([[1.5, 5.5], [1.5, 5.5]]))


def test_roi_align_runs_eagerly_and_has_gradients():
    from torchvision.ops import MultiScaleRoIAlign

    features = torch.randn(1, 4, 8, 8, requires_grad=True)
    pool = MultiScaleRoIAlign(["0"], 3, 2)
    out = pool({"0": features}, [torch.tensor([[0.0, 0, 32, 32]])], [(64, 64)])
    out.sum().backward()
    assert out.shape == (1, 4, 3, 3) and features.grad is not None
    # the lazily compiled fallback was swapped for the separable kernel (no torch.compile on first call)
    assert ops.roi_align_module._roi_align is ops.separable_roi_align


def test_fixed_grid_mask_targets_match_a_box_crop():
    masks = torch.zeros(1, 32, 32)
    masks[0, 8:24, 8:16] = 1  # left half of the box is foreground
    targets = ops._project_masks_on_boxes_2x2(masks, torch.tensor([[8.0, 8, 24, 24]]), torch.tensor([0]), 4)
    assert targets.shape == (1, 4, 4)
    assert torch.allclose(targets[0, :, :2], torch.ones(4, 2)) and targets[0, :, 3].max() == 0


def test_simple_pyramid_shapes():
    vit = SimpleFeaturePyramid([32], 8, single_scale=True)
    levels = vit([torch.randn(1, 32, 6, 8)])
    assert [tuple(v.shape[-2:]) for v in levels.values()] == [(12, 16), (6, 8), (3, 4)]
    convnet = SimpleFeaturePyramid([8, 16, 32], 8, single_scale=False)
    maps = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    assert [v.shape[1] for v in convnet(maps).values()] == [8, 8, 8]
    assert scale_boxes(torch.tensor([[10.0, 10, 20, 40]]), (100, 200), (50, 50)).tolist() == [[2.5, 5, 5, 20]]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_separable_roi_align_matches_torchvisions_kernel(aligned, sampling_ratio):
    """Same values and gradients as torchvision's RoIAlign, fixed and adaptive grids: its pure-PyTorch
    kernel here, its compiled kernel where torchvision's C ops are installed."""
    reference = ops.torchvision_fallback or torch.ops.torchvision.roi_align
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 13, 17, generator=generator, dtype=torch.float64)
    corners = torch.rand(12, 2, generator=generator, dtype=torch.float64) * torch.tensor([60.0, 44.0])
    sizes = torch.rand(12, 2, generator=generator, dtype=torch.float64) * 20 + 0.3
    boxes = torch.cat([corners, (corners + sizes).clamp(max=torch.tensor([67.0, 51.0]))], 1)
    rois = torch.cat([torch.tensor([0.0, 1.0]).repeat(6)[:, None].double(), boxes], 1)
    args = (0.25, 7, 5, sampling_ratio, aligned)
    ours_in = features.clone().requires_grad_(True)
    theirs_in = features.clone().requires_grad_(True)
    ours = ops.separable_roi_align(ours_in, rois, *args)
    theirs = reference(theirs_in, rois, *args)
    assert ours.shape == theirs.shape == (12, 5, 7, 5)
    assert torch.allclose(ours, theirs, atol=1e-10)
    weights = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.allclose(ours_in.grad, theirs_in.grad, atol=1e-10)


def test_separable_roi_align_ignores_samples_beyond_the_map():
    """The C++/CUDA kernel's rule: a sample more than one pixel outside the map contributes 0."""
    features = torch.ones(1, 1, 8, 8)
    outside = ops.separable_roi_align(features, torch.tensor([[0.0, 20, 20, 28, 28]]), 1.0, 2, 2, 2, True)
    assert outside.abs().max() == 0
    half = ops.separable_roi_align(features, torch.tensor([[0.0, 6, 0, 14, 8]]), 1.0, 1, 2, 2, True)
    # left bin (x 5.5-9.5 in map coords): its sample at 6.5 reads 1, the one at 8.5 lies beyond x = 8
    # and counts 0, so the mean is 0.5; the right bin's samples (10.5, 12.5) are all beyond: 0
    assert torch.allclose(half[0, 0], torch.tensor([[0.5, 0.0]]))
    empty = ops.separable_roi_align(features, torch.zeros(0, 5), 1.0, 2, 2, 2, True)
    assert empty.shape == (0, 1, 2, 2)
