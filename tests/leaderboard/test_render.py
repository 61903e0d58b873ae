import filecmp

import pytest

from saip_bench.errors import UserError
from saip_bench.leaderboard.render import fmt, write_boards
from tests.leaderboard.fakes import from_files, rec, three_methods


def test_boards_regenerate_byte_identically(tmp_path):
    records = three_methods(seeds=(0, 1), half_width=1.5)
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
        "plots/radar_synthetic-fast_vit_tiny.svg",
        "plots/pareto_synthetic-fast.svg",
        "leaderboard_synthetic-fast.tex",
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


# ------------------------------------------------------------------------------ issue 26: usable boards
def test_interval_beside_score_and_best_marked_only_when_distinguishable(tmp_path):
    write_boards(three_methods(half_width=2.0), tmp_path / "narrow", formats=("md",))
    text = (tmp_path / "narrow" / "leaderboard.md").read_text()
    line = next(r for r in text.splitlines() if r.startswith("| 1 | saip"))
    assert "90.00 [88.00, 92.00] ★" in line  # 88..92 vs dino's 78..82: apart
    assert "best distinguishable from the runner-up on Market" in text
    write_boards(three_methods(half_width=6.0), tmp_path / "wide", formats=("md",))
    text = (tmp_path / "wide" / "leaderboard.md").read_text()
    assert "★" not in text.split("### Summary", 1)[1]  # 84..96 overlaps 74..86: no winner claimed
    assert "gap inside the 95% intervals on Market" in text


def test_seed_count_not_seed_ids_and_mean_std_over_seeds(tmp_path):
    write_boards(three_methods(seeds=(3, 7), half_width=1.0), tmp_path, formats=("md",))
    text = (tmp_path / "leaderboard.md").read_text()
    market = text.split("### Market", 1)[1].split("###", 1)[0]
    saip = next(r for r in market.splitlines() if "| saip |" in r)
    assert saip.rstrip().endswith("| 2 |") and "3,7" not in market
    assert "95.00 ± 2.83 [94.00, 96.00]" in saip  # mean of 90+3, 90+7; interval = mean of per-seed bounds


def test_spec_metric_order_and_percent_units(tmp_path):
    extra = {"mINP": 30.0, "rank10": 95.0, "mAP": 50.0, "rank5": 92.0, "num_queries": 10.0}
    records = [rec("saip", "market1501", 90.0, task="reid", extra=extra),
               rec("saip", "lip", 0.4212, task="parsing", metric="mIoU",
                   extra={"pixel_acc": 0.8, "IoU/hat": 0.1}),
               rec("saip", "peta", 80.0, task="attributes", metric="mA")]
    write_boards(records, tmp_path, formats=("md", "html"))
    text = (tmp_path / "leaderboard.md").read_text()
    header = next(r for r in text.split("### Market", 1)[1].splitlines() if r.startswith("| rank"))
    assert header.split(" | ")[5:9] == ["rank5", "rank10", "mAP", "mINP"]  # the spec's order, not a-z
    assert "num_queries" not in header
    lip = text.split("### LIP", 1)[1]
    assert "42.12" in lip and "0.4212" not in lip  # fraction metric shown in percent, fixed decimals
    assert "IoU/hat" not in lip.split("###", 1)[0]  # per-class: folded into the HTML drill-down only
    page = (tmp_path / "leaderboard.html").read_text()
    assert "<details><summary>1 more metrics" in page and "IoU/hat" in page
    assert '<div class="scroll"><table' in page and 'id="filter"' in page


def test_paper_table_hides_empty_rows_and_shows_delta(tmp_path):
    import pandas as pd

    write_boards([rec("saip", "market1501", 60.0, metric="rank1")], tmp_path, compare="paper",
                 formats=("md", "csv"))
    text = (tmp_path / "leaderboard.md").read_text()
    table = text.split("### Beside the paper", 1)[1]
    rows = [r for r in table.splitlines() if r.startswith("| vit")]
    assert len(rows) == 1 and "| -35.20 |" in rows[0]  # 60.0 - 95.2
    assert "35 paper value(s) with no entry of ours" in table
    assert len(pd.read_csv(tmp_path / "compare_paper_synthetic-fast.csv")) == 36  # the CSV keeps all


def test_radar_axes_fixed_from_zero_to_100_with_paper_polygon():
    from saip_bench.leaderboard.paper import load_paper
    from saip_bench.leaderboard.plots import radar_figure, radius
    from saip_bench.leaderboard.tables import build_boards

    assert radius(50.0, "max") == 0.5 and radius(30.0, "min") == 0.7 and radius(130.0, "max") == 1.0
    close = [rec(m, d, v, metric=k) for m, v in (("saip", 49.36), ("dino", 48.84))
             for d, k in (("market1501", "rank1"), ("lip", "mIoU"), ("peta", "mA"))]
    far = [rec(m, d, v, metric=k) for m, v in (("saip", 90.0), ("dino", 10.0))
           for d, k in (("market1501", "rank1"), ("lip", "mIoU"), ("peta", "mA"))]
    figures = [radar_figure(build_boards(r)[0][0], "vit_tiny", load_paper()) for r in (close, far)]
    for fig in figures:
        ax = fig.axes[0]
        assert ax.get_ylim() == (0.0, 1.0)
        assert [t.get_text() for t in ax.get_yticklabels()] == ["25", "50", "75", "100"]
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert "paper Fig. 1 (SAIP*)" in lines  # vit family: the paper's outer values
    saip = {line.get_label(): line for line in figures[0].axes[0].get_lines()}["saip"]
    dino = {line.get_label(): line for line in figures[0].axes[0].get_lines()}["dino"]
    assert abs(saip.get_ydata()[0] - dino.get_ydata()[0]) < 0.01  # a 0.5-point gap looks like one


def test_pareto_only_when_costs_differ_and_names_the_device():
    from saip_bench.leaderboard.plots import pareto_figure
    from saip_bench.leaderboard.tables import build_boards

    same = [rec(m, d, v, metric="rank1") for m, v in (("saip", 1.0), ("dino", 2.0))
            for d in ("market1501", "lip", "peta")]
    assert pareto_figure(build_boards(same)[0][0]) is None
    fig = pareto_figure(build_boards(three_methods())[0][0])
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert len(labels) == 3 and "device not recorded" in labels[2]


# ------------------------------------------------------------------------------ issue 26: costs, links, LaTeX
SIZED = {"params_m": 5.5114, "params_m_size_free": 5.4866, "gflops": 1.407, "latency_ms": 17.95,
         "wall_s": 1.0, "input_h": 256.0, "input_w": 128.0}


def sized_records() -> list:
    """One backbone on two input sizes: a ViT's parameter count differs by task, its size-free count not."""
    large = {**SIZED, "params_m": 5.6834, "gflops": 11.18, "latency_ms": 169.8, "input_h": 512.0,
             "input_w": 512.0}
    out = []
    for method, score in (("saip", 60.0), ("dino", 50.0)):
        out.append(rec(method, "market1501", score, cost=SIZED))
        out.append(rec(method, "lip", score / 2, metric="mIoU", cost=large))
    return out


def test_one_params_figure_in_the_summary_and_costs_at_each_input_size(tmp_path):
    records = [r.model_copy(update={"provenance": {**r.provenance, "device": "cpu (x86_64, 1 threads)"}})
               for r in sized_records()]
    write_boards(records, tmp_path, formats=("md",))
    text = (tmp_path / "leaderboard.md").read_text()
    saip = next(r for r in text.split("### Summary", 1)[1].splitlines() if r.startswith("| 1 | saip"))
    assert "| 5.487 |" in saip and "5.511" not in saip and "5.683" not in saip  # one figure, size-free
    assert "¹ params: the backbone's parameters without a learnable position-embedding table" in text
    market = text.split("### Market", 1)[1].split("###", 1)[0]
    header = next(r for r in market.splitlines() if r.startswith("| rank"))
    assert "params (M) @256×128 | GFLOPs @256×128 | latency (ms, batch 1, cpu (x86_64, 1 threads))" in header
    assert "| 5.511 | 1.407 | 17.9 | 1 |" in market  # fixed decimals per cost column
    lip = text.split("### LIP", 1)[1].split("###", 1)[0]
    assert "params (M) @512×512" in lip and "| 5.683 | 11.180 | 169.8 | 1 |" in lip


def test_records_without_the_size_free_count_show_the_per_task_range_labelled(tmp_path):
    old = [rec(m, d, 1.0, cost={k: v for k, v in SIZED.items() if k != "params_m_size_free"}
               | ({"params_m": 6.3316} if d == "lip" else {}))
           for m in ("saip", "dino") for d in ("market1501", "lip")]
    write_boards(old, tmp_path, formats=("md",))
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| 5.511–6.332 (by input size) |" in text
    assert "input size not recorded" not in text.split("### Market", 1)[1].split("###", 1)[0]


def test_cells_link_to_their_record_files_relative_to_the_board(tmp_path):
    import pandas as pd

    records = from_files(three_methods(seeds=(0, 1), half_width=1.0), tmp_path / "run" / "records")
    write_boards(records, tmp_path / "boards", formats=("csv", "html"))
    page = (tmp_path / "boards" / "leaderboard.html").read_text()
    assert str(tmp_path) not in page  # relative links only
    assert 'href="../run/records/saip__vit_tiny__market1501__fast__seed0.json"' in page
    cells = pd.read_csv(tmp_path / "boards" / "per_dataset.csv")
    saip = cells[(cells["method"] == "saip") & (cells["dataset"] == "market1501")].iloc[0]
    listed = saip["records"].split(";")
    assert [p.rsplit("__", 1)[1] for p in listed] == ["seed0.json", "seed1.json"]  # every seed's record
    assert all((tmp_path / "boards" / p).resolve().is_file() for p in listed)
    write_boards(list(reversed(records)), tmp_path / "boards2", formats=("csv", "html"))
    for name in ("leaderboard.html", "per_dataset.csv"):  # a sibling folder: the same bytes
        assert (tmp_path / "boards" / name).read_bytes() == (tmp_path / "boards2" / name).read_bytes()
    write_boards(three_methods(), tmp_path / "memory", formats=("html",))  # not from files: no links
    assert "<a href" not in (tmp_path / "memory" / "leaderboard.html").read_text()


def test_markdown_score_cells_link_to_their_records(tmp_path):
    from markdown_it import MarkdownIt  # rich's own Markdown parser: the links must survive real parsing

    records = from_files(three_methods(half_width=1.0), tmp_path / "run" / "records")
    write_boards(records, tmp_path / "boards", formats=("md",))
    text = (tmp_path / "boards" / "leaderboard.md").read_text()
    assert str(tmp_path) not in text  # relative links only
    page = MarkdownIt("commonmark").enable("table").render(text)
    link = '<a href="../run/records/saip__vit_tiny__market1501__fast__seed0.json">'
    assert link in page
    label = page.split(link, 1)[1].split("</a>", 1)[0]
    assert label == "90.00 [89.00, 91.00] ★"  # the interval kept inside the link text, escapes resolved
    hrefs = [part.split('"', 1)[0] for part in page.split('<a href="')[1:] if "/records/" in part]
    # every record linked, nothing else
    linked = {(tmp_path / "boards" / h).resolve() for h in hrefs}
    assert linked == {path.resolve() for path in (tmp_path / "run" / "records").glob("*.json")}
    write_boards(list(reversed(records)), tmp_path / "boards2", formats=("md",))  # order-free bytes
    assert (tmp_path / "boards2" / "leaderboard.md").read_text() == text
    write_boards(three_methods(), tmp_path / "memory", formats=("md",))  # not from files: no links
    assert "](" not in (tmp_path / "memory" / "leaderboard.md").read_text().replace("](plots/", "")


def test_latex_export_is_a_tabular_per_table_with_the_boards_rows(tmp_path):
    write_boards(three_methods(half_width=2.0), tmp_path, formats=("tex",))
    text = (tmp_path / "leaderboard_synthetic-fast.tex").read_text()
    tables = text.split("\\begin{tabular}")[1:]
    assert len(tables) == 1 + 3  # summary + one per dataset
    assert all(t.count("\\end{tabular}") == 1 and "\\toprule" in t and "\\bottomrule" in t for t in tables)
    summary = tables[0].split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [line for line in summary.splitlines() if line.strip().endswith("\\\\")]
    assert [r.split(" & ")[1] for r in rows] == ["saip", "dino", "mae"]  # one line per entry, board order
    columns = len(tables[0].split("}", 1)[0].lstrip("{"))  # {rllll...}: one letter per column
    assert all(len(r.split(" & ")) == columns for r in rows)  # as many cells as the column spec
    assert "90.00 [88.00, 92.00] $\\star$" in rows[0]  # symbols as LaTeX, not raw Unicode
    assert "vit\\_tiny" in rows[0] and "↑" not in text and "★" not in text
