import filecmp

import pytest

from saip_bench.errors import UserError
from saip_bench.leaderboard.render import fmt, write_boards
from tests.leaderboard.fakes import rec, three_methods


def test_boards_regenerate_byte_identically(tmp_path):
    records = three_methods(seeds=(0, 1))
    first = write_boards(records, tmp_path / "a")
    second = write_boards(list(reversed(records)), tmp_path / "b")  # record order must not matter
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in first)
    assert names == sorted(p.relative_to(tmp_path / "b").as_posix() for p in second)
    assert {
        "leaderboard.md",
        "leaderboard.html",
        "summary.csv",
        "per_dataset.csv",
        "all_metrics.csv",
        "plots/radar_synthetic-fast_vit_tiny.png",
        "plots/pareto_synthetic-fast.png",
    } <= set(names)
    for name in names:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name


def test_markdown_content(tmp_path):
    write_boards([*three_methods(), rec("saip", "lip", 1.0, metric="mIoU", seed=3, limited=True)], tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "## Board `synthetic-fast`" in text
    assert "CrowdHuman mMR ↓" in text and "Market rank1 ↑" in text
    assert "1 record(s) from `--limit` runs were left out" in text
    assert "synthetic world" in text
    summary_line = next(line for line in text.splitlines() if line.startswith("| 1 | saip"))
    assert "90.00" in summary_line


def test_csv_summary_has_aggregates(tmp_path):
    import pandas as pd

    write_boards(three_methods(), tmp_path, formats=("csv",))
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["method"]) == ["saip", "dino", "mae"]
    assert summary.loc[0, "mean_rank"] == pytest.approx(4 / 3, abs=1e-5)
    assert not (tmp_path / "leaderboard.html").exists()


def test_compare_paper_marks_synthetic_as_not_comparable(tmp_path):
    records = [
        rec("saip", "market1501", 60.0, metric="rank1", extra={"mAP": 40.0}),
        rec("saip", "lip", 30.0, metric="pixel_acc", extra={"mIoU": 20.0}),
        rec("saip", "market1501", 55.0, metric="rank1", backbone="starnet_s3"),
    ]
    write_boards(records, tmp_path, compare="paper")
    import pandas as pd

    table = pd.read_csv(tmp_path / "compare_paper_synthetic-fast.csv")
    assert len(table) == 36 and not table["comparable"].any()
    market = table[(table["family"] == "vit") & (table["dataset"] == "market1501")].iloc[0]
    assert market["paper_value"] == 95.2 and market["our_value"] == 60.0 and market["our_metric"] == "rank1"
    lip = table[(table["family"] == "vit") & (table["dataset"] == "lip")].iloc[0]
    assert lip["our_metric"] == "mIoU" and lip["our_value"] == 20.0 and lip["metric_matched"]
    conv = table[(table["family"] == "convnet") & (table["dataset"] == "market1501")].iloc[0]
    assert conv["our_backbone"] == "starnet_s3" and conv["our_value"] == 55.0
    hybrid = table[table["family"] == "hybrid"]
    assert hybrid["our_value"].isna().all()
    assert "Beside the paper" in (tmp_path / "leaderboard.md").read_text()


def test_unknown_compare_target(tmp_path):
    with pytest.raises(UserError, match="only 'paper'"):
        write_boards(three_methods(), tmp_path, compare="sota")


def test_fmt():
    assert fmt(float("nan")) == "—"
    assert fmt(91.234, 0.5) == "91.23 ± 0.50"
    assert fmt(0.42391) == "0.4239"


def test_compare_paper_scales_fractions_to_percent(tmp_path):
    import pandas as pd

    records = [rec("saip", "lip", 0.42, metric="mIoU"), rec("dino", "lip", 0.40, metric="mIoU")]
    write_boards(records, tmp_path, compare="paper")
    table = pd.read_csv(tmp_path / "compare_paper_synthetic-fast.csv")
    lip = table[(table["family"] == "vit") & (table["dataset"] == "lip")].iloc[0]
    assert lip["our_value"] == 0.42 and lip["scale"] == 100.0
    assert "42.00 (fraction ×100)" in (tmp_path / "leaderboard.md").read_text()


def test_radar_never_draws_a_missing_score():
    from saip_bench.leaderboard.plots import radar_png
    from saip_bench.leaderboard.tables import build_boards

    two = [r for r in three_methods() if r.identity.dataset != "lip"]
    boards, _ = build_boards(two)
    assert radar_png(boards[0], "vit_tiny") is None  # fewer than 3 axes
    partial = [r for r in three_methods() if not (r.identity.method == "mae" and r.identity.dataset == "lip")]
    boards, _ = build_boards(partial)
    full, _ = build_boards(three_methods())
    drawn = radar_png(boards[0], "vit_tiny")  # mae (2 datasets) is left out, not drawn at zero
    assert drawn.startswith(b"\x89PNG") and drawn != radar_png(full[0], "vit_tiny")
