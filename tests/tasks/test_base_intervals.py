"""Task.score_with_intervals: the one place every task's record gets its bootstrap intervals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from saip_bench.metrics.reid import evaluate_reid
from saip_bench.specs import Uncertainty
from saip_bench.tasks.base import Task


class ScoreOnly(Task):
    """Only ``score`` matters here: a ReID metric call on fixed arrays."""

    name = "score_only"
    datasets = ()

    def build_head(self, *args):  # pragma: no cover - never called
        raise NotImplementedError

    def fit(self, *args):  # pragma: no cover
        raise NotImplementedError

    def predict(self, *args):  # pragma: no cover
        raise NotImplementedError

    def score(self, ctx, predictions):
        rng = np.random.default_rng(0)
        g_pids, g_cams = np.repeat(np.arange(6), 4), np.tile(np.arange(4), 6)
        q_pids, q_cams = rng.integers(0, 6, 20), rng.integers(0, 4, 20)
        dist = rng.random((20, 24)) - 0.3 * (q_pids[:, None] == g_pids[None, :])
        return evaluate_reid(dist, q_pids, g_pids, q_cams, g_cams)


def test_intervals_seeded_by_the_unit_and_switchable_off():
    task = ScoreOnly()
    scores, first = task.score_with_intervals(SimpleNamespace(bootstrap_resamples=100, seed=1), [])
    _, again = task.score_with_intervals(SimpleNamespace(bootstrap_resamples=100, seed=1), [])
    _, other = task.score_with_intervals(SimpleNamespace(bootstrap_resamples=100, seed=2), [])
    assert first["intervals"] == again["intervals"] != other["intervals"]  # (seconds differ)
    record_field = Uncertainty.model_validate(first)
    low, high = record_field.intervals["rank1"]
    assert low <= scores["rank1"] <= high and record_field.unit == "queries" and record_field.n_units == 20
    unscored, none = task.score_with_intervals(SimpleNamespace(bootstrap_resamples=0, seed=1), [])
    assert none is None and unscored == scores
