import math

import pytest

from saip_bench.errors import SpecError
from saip_bench.leaderboard.tables import build_boards, normalise
from tests.leaderboard.fakes import rec, three_methods


def board_of(records):
    boards, limited = build_boards(records)
    assert len(boards) == 1
    return boards[0], limited


def test_direction_aware_ranks_and_average_ties():
    board, _ = board_of(three_methods())
    ranks = board.cells.set_index(["method", "dataset"])["rank"]
    assert ranks["saip", "market1501"] == 1 and ranks["mae", "market1501"] == 3
    assert ranks["dino", "crowdhuman"] == 1 and ranks["mae", "crowdhuman"] == 3  # lower is better
    assert ranks["dino", "lip"] == ranks["mae", "lip"] == 2.5  # tie shares the average rank
    summary = board.summary.set_index("method")
    assert summary.loc["saip", "mean_rank"] == pytest.approx((1 + 2 + 1) / 3)
    assert summary.loc["dino", "mean_rank"] == pytest.approx((2 + 1 + 2.5) / 3)
    assert list(board.summary["method"]) == ["saip", "dino", "mae"]
    # normalised: per dataset best = 1, worst = 0, direction-aware
    assert summary.loc["saip", "norm_score"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    assert summary.loc["mae", "norm_score"] == pytest.approx(0.0)


def test_mean_and_std_over_seeds():
    board, _ = board_of(three_methods(seeds=(0, 1, 2)))
    cell = board.cells.set_index(["method", "dataset"]).loc[("saip", "market1501")]
    assert cell["mean"] == pytest.approx(91.0) and cell["std"] == pytest.approx(1.0)
    assert cell["n_seeds"] == 3 and cell["complete"]


def test_missing_seed_makes_cell_incomplete_and_row_unaggregated():
    records = [
        r
        for r in three_methods(seeds=(0, 1))
        if not (r.identity.method == "dino" and r.identity.seed == 1 and r.identity.dataset == "lip")
    ]
    board, _ = board_of(records)
    cells = board.cells.set_index(["method", "dataset"])
    assert not cells.loc[("dino", "lip"), "complete"] and math.isnan(cells.loc[("dino", "lip"), "rank"])
    summary = board.summary.set_index("method")
    assert not summary.loc["dino", "complete"] and math.isnan(summary.loc["dino", "mean_rank"])
    assert math.isnan(summary.loc["dino", "norm_score"]) and summary.loc["dino", "missing"] == "lip"
    # complete rows are ranked among themselves only (dino would have beaten saip on crowdhuman)
    assert summary.loc["saip", "mean_rank"] == 1.0 and summary.loc["mae", "mean_rank"] == 2.0
    assert list(board.summary["method"])[-1] == "dino"


def test_missing_dataset_refuses_aggregate():
    records = [r for r in three_methods() if not (r.identity.method == "mae" and r.identity.dataset == "lip")]
    board, _ = board_of(records)
    summary = board.summary.set_index("method")
    assert math.isnan(summary.loc["mae", "mean_rank"]) and summary.loc["mae", "missing"] == "lip"
    assert math.isnan(summary.loc["mae", "lip"])
    assert summary.loc["dino", "mean_rank"] == pytest.approx((2 + 1 + 2) / 3)


def test_limited_records_never_reach_a_board():
    records = [*three_methods(), rec("saip", "market1501", 99.0, seed=5, limited=True)]
    board, limited = board_of(records)
    assert limited == 1
    assert board.cells.set_index(["method", "dataset"]).loc[("saip", "market1501"), "mean"] == 90.0


def test_sources_and_tracks_are_separate_boards():
    records = [
        rec("saip", "lip", 1.0, metric="mIoU"),
        rec("saip", "lip", 2.0, metric="mIoU", source="real"),
        rec("saip", "lip", 3.0, metric="mIoU", track="finetune"),
    ]
    boards, _ = build_boards(records)
    assert [b.name for b in boards] == ["real-fast", "synthetic-fast", "synthetic-finetune"]


def test_disagreeing_metric_is_refused():
    records = [rec("saip", "lip", 1.0, metric="mIoU"), rec("dino", "lip", 2.0, metric="pixel_acc")]
    with pytest.raises(SpecError, match="lip disagree on metric"):
        build_boards(records)


def test_normalise_all_equal():
    import pandas as pd

    assert list(normalise(pd.Series([3.0, 3.0]), "max")) == [1.0, 1.0]
    assert list(normalise(pd.Series([1.0, 3.0]), "min")) == [1.0, 0.0]
