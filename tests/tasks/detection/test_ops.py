"""The torchvision ops the detectors rely on, on our CPU-only torch: nms, batched_nms, roi_align, pyramid."""

from __future__ import annotations

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
    # the lazily compiled fallback was swapped for its eager original (no torch.compile on first call)
    assert not hasattr(ops.roi_align_module._roi_align, "__wrapped__")


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
