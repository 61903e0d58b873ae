"""IRRA's masked language modelling: the masking rule's rates, the loss on hand-made cases, the head."""

from __future__ import annotations

import math

import pytest
import torch

from saip_bench.tasks.text.mlm import IGNORE, CrossModalMLM, MaskingRule, mask_tokens, mlm_loss

SOT, EOT, MASK = 49406, 49407, 49405


def captions(rows: int, words: int, seed: int = 0) -> torch.Tensor:
    """<sot> w1..wn <eot> 0... rows of ordinary BPE ids; one id equal to MASK per row (never a target)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(rows, words + 6, dtype=torch.long)
    ids[:, 0] = SOT
    ids[:, 1 : words + 1] = torch.randint(1, MASK, (rows, words), generator=generator)
    ids[:, 2] = MASK  # the mask slot's own id (IRRA leaves it alone)
    ids[:, words + 1] = EOT
    return ids


def test_masking_follows_the_recipes_rates():
    ids = captions(4000, 50)
    masked, labels = mask_tokens(ids, MASK, MaskingRule(), torch.Generator().manual_seed(0))
    candidate = (ids > 0) & (ids < MASK)
    target = labels != IGNORE
    n = int(candidate.sum())
    assert n == 4000 * 49
    # 15 % of the candidates (binomial sd ~0.0008), never anything else
    assert abs(target.sum().item() / n - 0.15) < 0.005
    assert not (target & ~candidate).any()
    assert torch.equal(masked[~target], ids[~target]) and torch.equal(labels[target], ids[target])
    # of the targets: 80 % <|mask|>, 10 % a random ordinary id, 10 % kept (sd ~0.002)
    share = target.sum().item()
    as_mask = (masked[target] == MASK).sum().item() / share
    kept = (masked[target] == ids[target]).sum().item() / share
    assert abs(as_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(1 - as_mask - kept - 0.1) < 0.01
    replaced = masked[target][(masked[target] != MASK) & (masked[target] != ids[target])]
    assert replaced.min() >= 1 and replaced.max() < MASK
    # seeded: the same draw twice, another seed another draw
    again = mask_tokens(ids, MASK, MaskingRule(), torch.Generator().manual_seed(0))
    other = mask_tokens(ids, MASK, MaskingRule(), torch.Generator().manual_seed(1))
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels)
    assert not torch.equal(other[1], labels)


def test_a_caption_without_targets_masks_its_first_token():
    ids = captions(5, 4)
    masked, labels = mask_tokens(ids, MASK, MaskingRule(rate=1e-9), torch.Generator().manual_seed(0))
    assert torch.equal(labels[:, 1], ids[:, 1]) and (masked[:, 1] == MASK).all()
    assert (labels[:, 2:] == IGNORE).all() and torch.equal(masked[:, 2:], ids[:, 2:])
    with pytest.raises(ValueError, match="masking rates"):
        MaskingRule(mask=0.95, random=0.1)


def test_mlm_loss_reads_only_the_targets():
    logits = torch.zeros(1, 3, 4)
    logits[0, 1] = torch.tensor([0.0, 0.0, math.log(2.0), 0.0])  # softmax of id 2: 2 / 5
    logits[0, 0] = torch.tensor([9.0, -9.0, -9.0, -9.0])  # unlabelled position: ignored however wrong
    labels = torch.tensor([[IGNORE, 2, IGNORE]])
    assert mlm_loss(logits, labels).item() == pytest.approx(-math.log(2 / 5))
    labels = torch.tensor([[IGNORE, 2, 3]])  # a second target, uniform logits: mean of -log 2/5, -log 1/4
    assert mlm_loss(logits, labels).item() == pytest.approx((-math.log(2 / 5) - math.log(1 / 4)) / 2)


def test_cross_modal_head_shapes_selection_and_image_dependence():
    torch.manual_seed(0)
    head = CrossModalMLM(width=32, vocab_size=50, depth=2, heads=2).eval()
    text, image = torch.randn(2, 7, 32), torch.randn(2, 5, 32)
    full = head(text, image)
    assert full.shape == (2, 7, 50)
    select = torch.zeros(2, 7, dtype=torch.bool)
    select[0, 3] = select[1, 1] = True
    assert torch.allclose(head(text, image, select), full[select], atol=1e-6)  # same logits, fewer rows
    assert not torch.allclose(head(text, torch.randn(2, 5, 32)), full)  # the image tokens matter
    names = {name for name, _ in head.named_parameters()}
    assert {"cross_attn.in_proj_weight", "mlm_head.fc.weight", "ln_pre_t.weight", "ln_pre_i.bias"} <= names
    assert any(name.startswith("cross_modal_transformer.resblocks.1.") for name in names)
