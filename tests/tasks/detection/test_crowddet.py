"""CrowdDet's pieces: anchors per level, the EMD loss on a hand-computed case, set NMS, RoI targets with
ignore regions, and one training / detection pass of the whole detector."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from saip_bench.tasks.detection.crowddet import CrowdDet, crowddet_anchor_generator, emd_loss, set_nms


def test_anchor_generator_sizes_per_level():
    generator = crowddet_anchor_generator()
    assert generator.sizes == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    assert generator.aspect_ratios == ((1.0, 2.0, 3.0),) * 5
    size = 256
    features = [torch.zeros(1, 1, size // s, size // s) for s in (4, 8, 16, 32, 64)]
    anchors = generator(ImageList(torch.zeros(1, 3, size, size), [(size, size)]), features)[0]
    counts = [3 * (size // s) ** 2 for s in (4, 8, 16, 32, 64)]
    assert len(anchors) == sum(counts)
    for level, first in enumerate(torch.tensor([0, *counts]).cumsum(0)[:-1].tolist()):
        three = anchors[first:first + 3]  # the three ratios at the level's first position
        widths, heights = three[:, 2] - three[:, 0], three[:, 3] - three[:, 1]
        base = 32 * 2**level
        tolerance = 0.12 if level == 0 else 0.03  # torchvision rounds anchor corners to whole pixels
        assert (heights / widths).tolist() == pytest.approx([1.0, 2.0, 3.0], rel=tolerance)
        assert (widths * heights).sqrt().tolist() == pytest.approx([base] * 3, rel=0.03)


def test_emd_loss_takes_the_better_of_the_two_assignments():
    # prediction 0 says "person" with zero deltas, prediction 1 says "background" with dx = 3
    logits = torch.tensor([[[0.0, 2.0], [2.0, 0.0]]]).repeat(2, 1, 1)
    deltas = torch.tensor([[[0.0, 0, 0, 0], [3.0, 0, 0, 0]]]).repeat(2, 1, 1)
    # proposal 0's person is in slot 0, proposal 1's in slot 1 (targets: zero deltas)
    labels = torch.tensor([[1, 0], [0, 1]])
    targets = torch.zeros(2, 2, 4)
    confident, wrong = math.log1p(math.exp(-2.0)), math.log1p(math.exp(2.0))
    matched = 2 * confident                 # person->person, background->background
    swapped = 2 * wrong + (3.0 - 0.5)       # both classes wrong + smooth-L1(3) with beta 1
    assert emd_loss(logits, deltas, labels, targets).item() == pytest.approx(matched, rel=1e-6)
    # one order for both proposals is right for proposal 0 only: the EMD loss is not that
    fixed_order = (matched + swapped) / 2
    assert fixed_order > 3 * emd_loss(logits, deltas, labels, targets).item()
    assert emd_loss(logits[:0], deltas[:0], labels[:0], targets[:0]).item() == 0.0


def test_set_nms_keeps_one_proposals_boxes_and_suppresses_across_proposals():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [0.0, 1, 10, 11], [50.0, 50, 60, 60],
                          [0.5, 0.5, 10.5, 10.5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    proposals = torch.tensor([0, 0, 1, 1, 2])
    # box 4 (proposal 2, best score) suppresses 0, 1 and 2 (other proposals, IoU > 0.5)
    assert set_nms(boxes, scores, proposals, 0.5).tolist() == [4, 3]
    keep = set_nms(boxes[:4], scores[:4], proposals[:4], 0.5).tolist()
    assert keep == [0, 1, 3]  # 0 and 1 overlap (IoU 0.82) but share proposal 0; 2 is suppressed by 0
    assert set_nms(boxes[:0], scores[:0], proposals[:0], 0.5).numel() == 0


def tiny_detector(**kwargs) -> CrowdDet:
    torch.manual_seed(0)
    options = dict(channels=16, representation=64, rpn_pre_nms=(200, 100), rpn_post_nms=(100, 50),
                   rois_per_image=32)
    options.update(kwargs)
    return CrowdDet([32], True, [0], **options)


def test_roi_targets_match_two_persons_and_leave_ignore_regions_out():
    detector = tiny_detector()
    persons = torch.tensor([[10.0, 10, 50, 110], [20.0, 10, 60, 110]])  # two overlapping persons
    target = {"boxes": persons, "ignore": torch.tensor([[100.0, 0, 160, 120]]), "seed": torch.tensor(3)}
    inside_ignore = torch.tensor([[110.0, 10, 150, 100]])
    between = torch.tensor([[15.0, 10, 55, 110]])
    rois, labels, deltas = detector.sample_rois(torch.cat([inside_ignore, between]), target)
    kept = {tuple(r.tolist()) for r in rois}
    assert tuple(inside_ignore[0].tolist()) not in kept  # neither person nor background
    row = [tuple(r.tolist()) for r in rois].index(tuple(between[0].tolist()))
    assert labels[row].tolist() == [1, 1] and deltas[row].abs().sum() > 0  # one proposal, two persons
    assert labels.shape == (len(rois), 2) and deltas.shape == (len(rois), 2, 4)


@pytest.mark.parametrize("refine", [False, True])
def test_training_and_detection_pass(refine):
    detector = tiny_detector(refine=refine, detections_per_img=7)
    maps = [torch.randn(2, 32, 8, 12)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 120]]), "ignore": torch.zeros(0, 4), "seed": torch.tensor(1)},
        {"boxes": torch.zeros(0, 4), "ignore": torch.tensor([[0.0, 0, 40, 40]]), "seed": torch.tensor(2)},
    ]
    sizes = [(128, 192), (120, 180)]
    detector.train()
    loss = detector.losses(maps, targets, sizes, (128, 192))
    again = detector.losses(maps, targets, sizes, (128, 192))
    assert torch.isfinite(loss) and loss.item() == again.item()  # seeded sampling: the same draws
    loss.backward()
    assert detector.head.cls.weight.grad.abs().sum() > 0
    assert detector.rpn.head.cls_logits.weight.grad.abs().sum() > 0
    detector.eval()
    found = detector.detect(maps, sizes, (128, 192))
    assert len(found) == 2 and all(len(f["boxes"]) <= 7 for f in found)
    for f, (h, w) in zip(found, sizes, strict=True):
        assert (f["boxes"][:, 2] <= w).all() and (f["boxes"][:, 3] <= h).all()
        assert (f["scores"][:-1] >= f["scores"][1:]).all()
