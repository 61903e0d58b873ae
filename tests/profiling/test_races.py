"""Same seed, same numbers on a multi-threaded CPU: no training step runs an atomic-add kernel whose order
changes the sum (``saip_bench.profiling.races``)."""

from __future__ import annotations

import inspect
import os

import pytest
import torch

from saip_bench.profiling.races import accumulation_races
from saip_bench.profiling.step_syncs import METHODS, TASK_UNITS, method_step, task_step


def test_repeated_indices_are_flagged_with_the_forward_line_and_distinct_ones_are_not():
    x = torch.randn(4, 3, requires_grad=True)
    with accumulation_races() as found:
        x[torch.tensor([2, 0, 1, 3])].sum().backward()  # a permutation: one addition per slot
        x[torch.tensor([True, False, True, True])].sum().backward()  # a mask
        x.detach().clone().index_put_((torch.tensor([0, 1]), torch.tensor([1, 1])), torch.ones(2),
                                      accumulate=True)  # two distinct (row, column) pairs
        x.detach().double().index_put_((torch.tensor([1, 1]),), torch.ones(2, 3, dtype=torch.float64),
                                       accumulate=True)  # float64: the serial kernel
        x.detach().clone()[:, torch.tensor([2, 2])] += 1.0  # `+=` on an index: a plain write
        assert not found
        repeated, line = x[torch.tensor([0, 0, 1])], inspect.currentframe().f_lineno
        repeated.sum().backward()
        torch.zeros(5).put_(torch.tensor([1, 1]), torch.ones(2), accumulate=True)
        torch.zeros(3, 2).index_put_((torch.tensor([1, 1]), torch.tensor([0, 0])), torch.ones(2),
                                     accumulate=True)
    assert sum(found.values()) == 3 and len(found) == 3, found
    assert f"index_put: IndexBackward0 of {os.path.relpath(__file__)}:{line}" in found, found
    assert any(key.startswith("put_: ") for key in found)


@pytest.mark.parametrize("name", sorted(TASK_UNITS))
def test_no_fine_tune_step_accumulates_in_a_thread_dependent_order(synth_world, tmp_path, name):
    """Fashionpedia's attribute head indexed each image's context by box (``context[per_image]``): two
    same-seed fine-tunes on 2 threads differed from step 2 until it expanded instead."""
    with accumulation_races() as found:
        task_step(name, synth_world, tmp_path)
    assert not found, f"{name}: {dict(found)}"


@pytest.mark.parametrize("name", METHODS)
def test_no_pretraining_step_accumulates_in_a_thread_dependent_order(synth_world, tmp_path, name):
    with accumulation_races() as found:
        method_step(name, synth_world / "pretrain", tmp_path)
    assert not found, f"{name}: {dict(found)}"


def test_the_knowledge_head_was_the_case_found(synth_world, tmp_path, monkeypatch):
    """The check can fail: the attribute head's old per-box indexing of the image context is flagged."""
    from saip_bench.tasks.detection import fashion_rcnn

    def indexed(context: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        per_image = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(boxes)])
        return context[per_image.to(context.device)]

    monkeypatch.setattr(fashion_rcnn, "per_box_context", indexed)
    with accumulation_races() as found:
        task_step("fashion", synth_world, tmp_path)
    assert [key.split(" of ")[0] for key in found] == ["index_put: IndexBackward0"], found
