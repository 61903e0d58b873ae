"""Each training step stays within its measured host syncs (``benchmarks/step_syncs.py`` prints the table).

Why: on a GPU a host read, a data-dependent shape or a blocking copy in a step stops the host until the
device drains its queue; a ViT-Tiny step is mostly such fixed cost. The budgets are the counts measured
after the syncs were taken out (docs/performance.md); a change that adds one (a ``.item()`` in a loss)
fails here. Lower a budget when a change removes syncs; raise one only with the reason beside it.
"""

from __future__ import annotations

import pytest
import torch

from saip_bench.profiling.step_syncs import method_step, task_step

# per step: host reads, data-dependent ops, blocking small copies, queued small copies, blocking batch copies
COLUMNS = ("reads", "data_dependent", "small_h2d", "async_h2d", "batch_h2d")
TASK_BUDGETS = {
    "reid": (0, 0, 0, 0, 0),
    "t2i_retrieval": (0, 0, 0, 2, 0),  # token ids + labels, then MLM masks + targets: one packed copy each
    "attributes": (0, 0, 0, 0, 0),
    "parsing": (0, 0, 0, 0, 0),  # the Lovász plan comes with the batch, computed on the host
    "multi_parsing": (0, 0, 0, 0, 0),
    "pose": (0, 0, 0, 0, 0),  # targets rendered on the device, the 1/255 a cached device constant
    "wholebody": (0, 0, 0, 0, 0),
}
METHOD_BUDGETS = {  # every method: the trainer's one packed read of the loss terms (the guard, by design)
    "supervised_ids": (1, 0, 0, 3, 0),
    "mae": (1, 0, 0, 3, 0),
    "dino": (1, 0, 0, 13, 0),  # queued copies: the views' per-sample parameters, drawn on the host
    "hap": (1, 0, 0, 4, 0),
    "solider": (1, 1, 0, 15, 0),  # the labelled crops' rows: SOLIDER's semantic head sees only those
    "mocov3": (1, 0, 0, 8, 0),
    "random": (1, 0, 0, 0, 0),
    "saip": (1, 0, 0, 17, 0),  # views.augmented_crops: one copy per crop call, not per view
}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _over_budget(counts, budget):
    totals = counts.totals()
    over = {key: (totals[key], limit) for key, limit in zip(COLUMNS, budget, strict=True)
            if totals[key] > limit}
    return over, sorted(counts.sites.items())


@pytest.mark.parametrize("name", sorted(TASK_BUDGETS))
def test_fine_tune_step_stays_within_its_syncs(synth_world, tmp_path, name):
    result = task_step(name, synth_world, tmp_path)
    over, sites = _over_budget(result.counts, TASK_BUDGETS[name])
    assert not over, f"{name}: (count, budget) {over}; events: {sites}"


@pytest.mark.parametrize("name", sorted(METHOD_BUDGETS))
def test_pretraining_step_stays_within_its_syncs(synth_world, tmp_path, name):
    result = method_step(name, synth_world / "pretrain", tmp_path)
    over, sites = _over_budget(result.counts, METHOD_BUDGETS[name])
    assert not over, f"{name}: (count, budget) {over}; events: {sites}"


def test_a_read_added_to_a_loss_is_caught(synth_world, tmp_path, monkeypatch):
    """The guard above can fail: one ``.item()`` in the ReID triplet loss is one more read per step."""
    from saip_bench.tasks import reid

    original = reid.triplet_loss

    def reading(features, labels, margin=None):
        loss = original(features, labels, margin)
        loss.detach().item()
        return loss

    monkeypatch.setattr(reid, "triplet_loss", reading)
    counts = task_step("reid", synth_world, tmp_path).counts
    assert counts.totals()["reads"] == 1
    over, _ = _over_budget(counts, TASK_BUDGETS["reid"])
    assert over == {"reads": (1, 0)}
