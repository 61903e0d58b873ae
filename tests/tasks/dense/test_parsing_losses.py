"""CE2P/SCHP losses: Lovász-softmax against a case computed by hand, edge targets, the balanced edge loss."""

from __future__ import annotations

import pytest
import torch

from saip_bench.tasks.dense.parsing_losses import balanced_edge_loss, ce2p_loss, edge_targets, lovasz_softmax


def hand_case(extra_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One 1x4 image: labels 0, 0, 1 and an ignored pixel; P(class 1) = 0.2, 0.6, 0.7 (and 0.9 ignored)."""
    p1 = torch.tensor([0.2, 0.6, 0.7, 0.9])
    channels = [1 - p1, p1] + ([torch.zeros(4)] if extra_channel else [])
    return torch.stack(channels)[None, :, None, :], torch.tensor([[[0, 0, 1, 255]]])


def test_lovasz_softmax_matches_the_hand_computed_value():
    # class 0: errors 0.2, 0.6, 0.3 (fg 1, 1, 0); sorted 0.6(fg) 0.3(bg) 0.2(fg); Jaccard 1/2, 2/3, 1
    #   -> increments 1/2, 1/6, 1/3 -> 0.6/2 + 0.3/6 + 0.2/3 = 5/12
    # class 1: errors 0.2, 0.6, 0.3 (fg 0, 0, 1); sorted 0.6(bg) 0.3(fg) 0.2(bg); Jaccard 1/2, 1, 1
    #   -> increments 1/2, 1/2, 0 -> 0.6/2 + 0.3/2 = 9/20; mean over the present classes = 13/30
    probabilities, labels = hand_case()
    assert float(lovasz_softmax(probabilities, labels)) == pytest.approx(13 / 30, abs=1e-6)
    # an absent class: skipped by "present", a zero term (its errors are all 0 here) under "all"
    probabilities, labels = hand_case(extra_channel=True)
    assert float(lovasz_softmax(probabilities, labels, classes="present")) == pytest.approx(13 / 30, abs=1e-6)
    assert float(lovasz_softmax(probabilities, labels, classes="all")) == pytest.approx(26 / 90, abs=1e-6)


def test_lovasz_softmax_is_zero_for_a_perfect_prediction_and_has_gradients():
    labels = torch.tensor([[[0, 1], [2, 255]]])
    perfect = torch.nn.functional.one_hot(labels.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    assert float(lovasz_softmax(perfect, labels)) == pytest.approx(0.0)
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    lovasz_softmax(logits.softmax(1), labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    everything_ignored = torch.full((1, 2, 2), 255)
    assert float(lovasz_softmax(perfect, everything_ignored)) == 0.0


def test_edge_targets_mark_class_boundaries_but_not_ignored_ones():
    labels = torch.tensor([[1, 1, 2, 2]] * 4)
    expected = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 0]])
    assert edge_targets(labels, width=1)[0].tolist() == expected.tolist()
    assert edge_targets(labels, width=3)[0].tolist() == [[1, 1, 1, 1]] * 4  # dilated by a 3x3 box
    ignored = torch.tensor([[1, 1, 255, 255]] * 4)
    assert edge_targets(ignored, width=3).sum() == 0


def test_balanced_edge_loss_weights_each_class_by_the_others_share():
    edges = torch.tensor([[[1, 0, 0, 0]]])  # one edge pixel in four: weights 1/4 (no edge) and 3/4 (edge)
    logits = torch.randn(1, 2, 1, 4)
    expected = torch.nn.functional.cross_entropy(logits, edges, weight=torch.tensor([0.25, 0.75]))
    assert float(balanced_edge_loss(logits, edges)) == pytest.approx(float(expected))
    for uniform in (torch.zeros(1, 1, 4, dtype=torch.long), torch.ones(1, 1, 4, dtype=torch.long)):
        plain = torch.nn.functional.cross_entropy(logits, uniform)  # one class only: no 0/0 weighting
        assert float(balanced_edge_loss(logits, uniform)) == pytest.approx(float(plain))


def test_ce2p_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 4:12, 3:9] = 1
    labels[:, 10:, 10:] = 2
    parsing, fused, edge = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 2, 4, 4)
    full = ce2p_loss([parsing, fused], edge, labels)
    lovasz_only = ce2p_loss([parsing, fused], None, labels, ce_weight=0.0)
    ce_only = ce2p_loss([parsing, fused], None, labels, lovasz_weight=0.0)
    edge_only = ce2p_loss([parsing, fused], edge, labels, lovasz_weight=0.0, ce_weight=0.0)
    assert float(full) == pytest.approx(float(lovasz_only + ce_only + edge_only), rel=1e-5)
    assert float(edge_only) > 0 and float(lovasz_only) > 0
