"""Boards -> Markdown, CSV, a self-contained HTML page (sortable tables, plots inlined) and PNG/SVG plots.

Why: the same tables in the formats people paste (Markdown), load (CSV) and browse (HTML). Output is a
pure function of the records: no timestamps, no absolute paths, deterministic plots, so regenerating a
board from the same records gives byte-identical files.

A reader can use them: scores in percent with two decimals in every score column, the bootstrap 95%
interval beside each score, ★ only on a best entry distinguishable from the runner-up, metrics in the
spec's order (the rest folded into a drill-down in HTML, all of them in ``all_metrics.csv``), the number
of seeds rather than their ids, and a paper-vs-ours table with deltas that leaves out rows with nothing
to compare.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from saip_bench.errors import SpecError, UserError
from saip_bench.leaderboard.paper import compare_with_paper, load_paper
from saip_bench.leaderboard.plots import AXIS_LABELS, encode, pareto_figure, radar_figure
from saip_bench.leaderboard.tables import Board, build_boards
from saip_bench.specs import ResultRecord, get_task_spec
from saip_bench.utils import atomic_write_bytes, atomic_write_text

TRACK_TEXT = {
    "fast": "fast protocol (frozen backbone: linear probe / frozen-feature heads)",
    "finetune": "paper protocol (full fine-tuning)",
}
SOURCE_TEXT = {
    "synthetic": "synthetic world: these numbers test the pipeline, not accuracy on real data",
    "real": "real datasets",
}


def fmt(value: float, std: float = math.nan) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    digits = 2 if abs(value) >= 1.5 or value == 0 else 4
    text = f"{value:.{digits}f}"
    if not math.isnan(std):
        text += f" ± {std:.{digits}f}"
    return text


SCORE_DIGITS = 2  # every score column: percent with two decimals
BEST_MARK = " ★"


def fmt_score(value: float, std: float = math.nan, low: float = math.nan, high: float = math.nan) -> str:
    """``mean ± std [low, high]`` with fixed decimals; the std only with several seeds, the interval only
    when the records carry one."""
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.{SCORE_DIGITS}f}"
    if not math.isnan(std):
        text += f" ± {std:.{SCORE_DIGITS}f}"
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.{SCORE_DIGITS}f}, {high:.{SCORE_DIGITS}f}]"
    return text


def report_order(board: Board, dataset: str, available: Iterable[str]) -> tuple[list[str], list[str]]:
    """(shown, folded): the spec's ``report`` metrics in its order (main left out), then the rest.

    Without a spec for the task (hand-made records) every metric is shown, sorted by name."""
    info = board.dataset_info[dataset]
    names = [m for m in available if m != info["metric"] and not m.startswith("num_")]
    try:
        report = list(get_task_spec(info["task"], dataset).metric.report)
    except (SpecError, UserError):
        return sorted(names), []
    shown = [m for m in report if m in names]
    return shown, sorted(set(names) - set(shown))


def fmt_plain(value: float, digits: int = 2) -> str:
    """Ranks and costs: fixed decimals with trailing zeros dropped (1, 2.5, 1.33)."""
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def arrow(direction: str) -> str:
    return "↓" if direction == "min" else "↑"


def dataset_header(board: Board, dataset: str) -> str:
    info = board.dataset_info[dataset]
    return f"{AXIS_LABELS.get(dataset, dataset)} {info['metric']} {arrow(info['direction'])}"


# ------------------------------------------------------------------------------------------ tables
def summary_rows(board: Board) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Header and rows of (display text, sort value) for the summary table."""
    header = [
        "#",
        "method",
        "backbone",
        "pretrain",
        "family",
        "params (M)",
        "GFLOPs (mean over tasks)",
        *[dataset_header(board, d) for d in board.datasets],
        "mean rank ↓",
        "norm. score ↑",
    ]
    cells = board.cells.set_index(["method", "backbone", "pretrain", "dataset"])
    rows = []
    for position, row in board.summary.iterrows():
        entry = (row["method"], row["backbone"], row["pretrain"])
        out = [
            (str(position + 1) if row["complete"] else "", str(position + 1)),
            (row["method"], row["method"]),
            (row["backbone"], row["backbone"]),
            (row["pretrain"], row["pretrain"]),
            (row["family"], row["family"]),
            (fmt_plain(row["params_m"]), _num(row["params_m"])),
            (fmt_plain(row["gflops"], 3), _num(row["gflops"])),
        ]
        for dataset in board.datasets:
            key = (*entry, dataset)
            if key not in cells.index:
                out.append(("—", ""))
                continue
            cell = cells.loc[key]
            text = fmt_score(cell["mean"], cell["std"], cell["ci_low"], cell["ci_high"])
            if cell["distinct_best"]:
                text += BEST_MARK
            if not cell["complete"]:
                text += f" (incomplete: {cell['n_seeds']} seed(s))"
            out.append((text, _num(cell["mean"])))
        out.append((fmt_plain(row["mean_rank"]), _num(row["mean_rank"])))
        norm = fmt(row["norm_score"]) if row["complete"] else f"— (missing: {row['missing']})"
        out.append((norm, _num(row["norm_score"])))
        rows.append(out)
    return header, rows


def dataset_rows(board: Board, dataset: str, folded: bool = False
                 ) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The per-dataset table: main metric, then the spec's report metrics (``folded``: the other metrics
    instead, for the drill-down). Counts such as num_queries stay in all_metrics.csv only."""
    info = board.dataset_info[dataset]
    cells = board.cells[board.cells["dataset"] == dataset]
    metrics = board.metrics[board.metrics["dataset"] == dataset]
    shown, rest = report_order(board, dataset, sorted(set(metrics["metric"])))
    others = rest if folded else shown
    header = [
        "rank",
        "method",
        "backbone",
        "pretrain",
        f"{info['metric']} {arrow(info['direction'])}",
        *others,
        "seeds",
    ]
    order = cells.assign(_r=cells["rank"].fillna(math.inf)).sort_values(
        ["_r", "method", "backbone", "pretrain"], kind="mergesort"
    )
    rows = []
    for _, cell in order.iterrows():
        entry = metrics[
            (metrics["method"] == cell["method"])
            & (metrics["backbone"] == cell["backbone"])
            & (metrics["pretrain"] == cell["pretrain"])
        ].set_index("metric")
        rank = fmt_plain(cell["rank"]) if not math.isnan(cell["rank"]) else "— (incomplete)"
        main = fmt_score(cell["mean"], cell["std"], cell["ci_low"], cell["ci_high"])
        out = [
            (rank, _num(cell["rank"])),
            (cell["method"], cell["method"]),
            (cell["backbone"], cell["backbone"]),
            (cell["pretrain"], cell["pretrain"]),
            (main + (BEST_MARK if cell["distinct_best"] else ""), _num(cell["mean"])),
        ]
        for metric in others:
            if metric in entry.index:
                m = entry.loc[metric]
                out.append((fmt_score(m["mean"], m["std"], m["ci_low"], m["ci_high"]), _num(m["mean"])))
            else:
                out.append(("—", ""))
        out.append((str(cell["n_seeds"]), str(cell["n_seeds"])))
        rows.append(out)
    return header, rows


def _num(value: float) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[tuple[str, str]]]) -> str:
    def clean(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(text) for text, _ in row) + " |" for row in rows]
    return "\n".join(lines)


def board_intro(board: Board) -> str:
    return (
        f"Data: {SOURCE_TEXT.get(board.source, board.source)}. Protocol: "
        f"{TRACK_TEXT.get(board.track, board.track)}. Scores are in percent (fraction metrics ×100), means "
        "over seeds (± sample std when there are several), with the bootstrap 95% interval over test "
        "samples in brackets (1000 resamples of the queries or images, predictions resampled, no "
        "retraining; with several seeds the mean of the per-seed bounds). ★ marks a best entry whose "
        "interval does not overlap the runner-up's; without ★ the gap to the runner-up may be test-set "
        "noise. Ranks: 1 = best, ties share the average rank, ↓ marks lower-is-better metrics. "
        "Mean rank and the normalised score (per dataset min-max over the compared complete entries, best = "
        "100) are computed only for entries with every planned seed on every dataset of the board."
    )


def interval_line(board: Board) -> str:
    """One line: on which datasets the best entry is distinguishable from the runner-up."""
    distinct, inside, unknown = [], [], []
    for dataset in board.datasets:
        cells = board.cells[(board.cells["dataset"] == dataset) & board.cells["complete"]]
        name = AXIS_LABELS.get(dataset, dataset)
        if len(cells) < 2:
            continue
        if cells["distinct_best"].any():
            distinct.append(name)
        elif cells["ci_low"].notna().sum() >= 2:
            inside.append(name)
        else:
            unknown.append(name)
    parts = [f"best distinguishable from the runner-up on {', '.join(distinct) or 'no dataset'}"]
    if inside:
        parts.append(f"gap inside the 95% intervals on {', '.join(inside)}")
    if unknown:
        parts.append(f"no intervals recorded on {', '.join(unknown)}")
    return "Intervals: " + "; ".join(parts) + "."


def render_markdown(
    boards: Sequence[Board], limited: int, plots: dict[str, bytes], comparisons: dict[str, pd.DataFrame]
) -> str:
    parts = [
        "# saip-bench leaderboard",
        "",
        "Generated by `saip-bench leaderboard` from result records only; every number traces to a record "
        "(identity, scores, provenance).",
    ]
    if limited:
        parts += ["", f"{limited} record(s) from `--limit` runs were left out (never shown on boards)."]
    for board in boards:
        parts += ["", f"## Board `{board.name}`", "", board_intro(board), "", interval_line(board), "",
                  "### Summary", ""]
        parts.append(markdown_table(*summary_rows(board)))
        for dataset in board.datasets:
            info = board.dataset_info[dataset]
            parts += [
                "",
                f"### {AXIS_LABELS.get(dataset, dataset)} ({dataset}, task {info['task']}, protocol "
                f"`{info['protocol']}`, main metric {info['metric']} {arrow(info['direction'])})",
                "",
            ]
            parts.append(markdown_table(*dataset_rows(board, dataset)))
        names = [name for name in plot_names(board) if name in plots]
        if names:
            parts += ["", "### Plots", ""] + [
                f"![{name}](plots/{name}) ([SVG](plots/{name[:-4]}.svg))" for name in names
            ]
        if board.name in comparisons:
            header, rows, hidden = compare_rows(comparisons[board.name])
            parts += [
                "",
                "### Beside the paper (Fig. 1 outer values)",
                "",
                COMPARE_NOTE + compare_hidden_note(hidden),
                "",
                markdown_table(header, rows),
            ]
    return "\n".join(parts) + "\n"


COMPARE_NOTE = (
    "Paper values: the outer labels of the paper's Fig. 1 (`leaderboards/paper/fig1_outer.csv`, mostly the "
    "'Ours*' variant; the plotted metric is UNCONFIRMED). Ours: the `saip` entry on the backbone of the same "
    "family. `comparable` is yes only for boards on real data with the paper's fine-tuning protocol."
)


def compare_hidden_note(hidden: int) -> str:
    if not hidden:
        return ""
    return f" {hidden} paper value(s) with no entry of ours to compare are left out (see the CSV)."


def compare_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, str]]], int]:
    """Rows with a value on both sides (and their count of left-out rows); delta = ours - paper, both
    in percent."""
    header = [
        "family",
        "dataset",
        "paper (method, presumed metric)",
        "paper value",
        "our backbone",
        "our metric",
        "our value (as %)",
        "delta (ours − paper)",
        "comparable",
    ]
    rows = []
    hidden = 0
    for _, row in frame.iterrows():
        if math.isnan(row["our_value"]) or math.isnan(row["paper_value"]):
            hidden += 1
            continue
        ours = row["our_value"] * row["scale"]
        delta = ours - row["paper_value"]
        metric = row["our_metric"] + (
            "" if row["metric_matched"] or not row["our_metric"] else " (main; no match)"
        )
        rows.append(
            [
                (row["family"], row["family"]),
                (row["dataset"], row["dataset"]),
                (f"{row['paper_method']}, {row['paper_metric']}", row["paper_metric"]),
                (f"{row['paper_value']:.{SCORE_DIGITS}f}", _num(row["paper_value"])),
                (row["our_backbone"] or "—", row["our_backbone"]),
                (metric or "—", metric),
                (
                    f"{ours:.{SCORE_DIGITS}f}" + (" (fraction ×100)" if row["scale"] != 1 else ""),
                    _num(ours),
                ),
                (f"{delta:+.{SCORE_DIGITS}f}", _num(delta)),
                ("yes" if row["comparable"] else "no", "yes" if row["comparable"] else "no"),
            ]
        )
    return header, rows, hidden


# ------------------------------------------------------------------------------------------ HTML
SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var numeric = th.getAttribute('data-type') === 'num';
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        if (x === '' && y === '') return 0;
        if (x === '') return 1;
        if (y === '') return -1;
        var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return ascending ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " ▲"; } th[aria-sort=descending]::after { content: " ▼"; }
td.t { text-align: left; } .note { color: #555; max-width: 70rem; } img { max-width: 100%; }
.scroll { overflow-x: auto; max-width: 100%; margin-bottom: 1rem; }
details > summary { cursor: pointer; color: #335; margin: 0.25rem 0; }
#filter { margin: 0.5rem 0; padding: 0.25rem; width: 24rem; }
"""

FILTER_SCRIPT = """
document.getElementById('filter').addEventListener('input', function (event) {
  var words = event.target.value.toLowerCase().split(/\\s+/).filter(Boolean);
  document.querySelectorAll('table.sortable tbody tr').forEach(function (row) {
    var text = (row.getAttribute('data-entry') || row.textContent).toLowerCase();
    row.style.display = words.every(function (w) { return text.indexOf(w) >= 0; }) ? '' : 'none';
  });
});
"""


def html_table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    numeric = []
    for col in range(len(header)):
        values = [row[col][1] for row in rows if row[col][1] != ""]
        numeric.append(bool(values) and all(_is_number(v) for v in values))
    head = "".join(
        f'<th data-type="{"num" if numeric[i] else "text"}">{html.escape(h)}</th>'
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        tds = "".join(
            f'<td{"" if numeric[i] else " class=t"} data-v="{html.escape(v)}">{html.escape(t)}</td>'
            for i, (t, v) in enumerate(row)
        )
        body.append(f"<tr>{tds}</tr>")
    return (
        f'<div class="scroll"><table class="sortable" id="{html.escape(table_id)}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def render_html(
    boards: Sequence[Board], limited: int, plots: dict[str, bytes], comparisons: dict[str, pd.DataFrame]
) -> str:
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<title>saip-bench leaderboard</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>saip-bench leaderboard</h1>",
        '<p class="note">Built from result records only. Click a column header to sort; type words '
        "(method, backbone, pretraining, track) to filter rows.</p>",
        '<input id="filter" type="search" placeholder="filter rows, e.g. saip vit_tiny">',
    ]
    if limited:
        parts.append(f'<p class="note">{limited} record(s) from --limit runs were left out.</p>')
    for board in boards:
        parts.append(f'<h2 id="board-{html.escape(board.name)}">Board {html.escape(board.name)}</h2>')
        parts.append(f'<p class="note">{html.escape(board_intro(board))}</p>')
        parts.append(f'<p class="note">{html.escape(interval_line(board))}</p><h3>Summary</h3>')
        parts.append(html_table(f"summary-{board.name}", *summary_rows(board)))
        for dataset in board.datasets:
            info = board.dataset_info[dataset]
            parts.append(
                f"<h3>{html.escape(AXIS_LABELS.get(dataset, dataset))} ({html.escape(dataset)}, "
                f"protocol {html.escape(info['protocol'])}, main metric {html.escape(info['metric'])} "
                f"{arrow(info['direction'])})</h3>"
            )
            parts.append(html_table(f"{board.name}-{dataset}", *dataset_rows(board, dataset)))
            header, rows = dataset_rows(board, dataset, folded=True)
            if len(header) > 6:  # rank, method, backbone, pretrain, main, seeds + folded metrics
                parts.append(
                    f"<details><summary>{len(header) - 6} more metrics (per class / per threshold)</summary>"
                    + html_table(f"{board.name}-{dataset}-all", header, rows) + "</details>"
                )
        for name in (n for n in plot_names(board) if n in plots):
            data = base64.b64encode(plots[name]).decode()
            parts.append(
                f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(name)}</figcaption></figure>"
            )
        if board.name in comparisons:
            header, rows, hidden = compare_rows(comparisons[board.name])
            note = COMPARE_NOTE + compare_hidden_note(hidden)
            parts.append(f'<h3>Beside the paper</h3><p class="note">{html.escape(note)}</p>')
            parts.append(html_table(f"paper-{board.name}", header, rows))
    parts.append(f"<script>{SORT_SCRIPT}{FILTER_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ files
def plot_names(board: Board) -> list[str]:
    names = [f"radar_{board.name}_{backbone}.png" for backbone in sorted(set(board.summary["backbone"]))]
    return [*names, f"pareto_{board.name}.png"]


def make_plots(board: Board, paper: pd.DataFrame | None = None) -> dict[str, bytes]:
    """``<name>.png`` and ``<name>.svg`` of every plot of the board (radars with the paper's polygon)."""
    plots: dict[str, bytes] = {}
    figures = [(f"radar_{board.name}_{backbone}", radar_figure(board, backbone, paper))
               for backbone in sorted(set(board.summary["backbone"]))]
    figures.append((f"pareto_{board.name}", pareto_figure(board)))
    for stem, fig in figures:
        if fig is not None:
            for kind, data in encode(fig).items():
                plots[f"{stem}.{kind}"] = data
    return plots


def _paper_or_none() -> pd.DataFrame | None:
    """The paper's numbers for the radar's reference polygon; a board without them still renders."""
    try:
        return load_paper()
    except (SpecError, UserError):
        return None


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.6g")


def write_boards(
    records: Sequence[ResultRecord],
    out_dir: str | Path,
    compare: str | None = None,
    formats: Sequence[str] = ("md", "csv", "html", "png"),
) -> list[Path]:
    """Build every board from ``records`` and write them under ``out_dir``; returns the files written."""
    out = Path(out_dir)
    boards, limited = build_boards(records)
    plots: dict[str, bytes] = {}
    paper_numbers = _paper_or_none()
    for board in boards:
        plots.update(make_plots(board, paper_numbers))
    comparisons: dict[str, pd.DataFrame] = {}
    if compare == "paper":
        paper = load_paper()
        comparisons = {board.name: compare_with_paper(board, paper) for board in boards}
    elif compare:
        raise UserError(f"--compare {compare!r}: only 'paper' is known")
    written: list[Path] = []

    def emit(name: str, data: bytes | str) -> None:
        path = out / name
        if isinstance(data, str):
            atomic_write_text(path, data)
        else:
            atomic_write_bytes(path, data)
        written.append(path)

    if "md" in formats:
        emit("leaderboard.md", render_markdown(boards, limited, plots, comparisons))
    if "csv" in formats:
        emit(
            "summary.csv",
            csv_text(
                pd.concat([b.summary.assign(board=b.name) for b in boards], ignore_index=True)
                if boards
                else pd.DataFrame()
            ),
        )
        emit(
            "per_dataset.csv",
            csv_text(
                pd.concat([b.cells.assign(board=b.name) for b in boards], ignore_index=True)
                if boards
                else pd.DataFrame()
            ),
        )
        emit(
            "all_metrics.csv",
            csv_text(
                pd.concat([b.metrics.assign(board=b.name) for b in boards], ignore_index=True)
                if boards
                else pd.DataFrame()
            ),
        )
        for name, frame in comparisons.items():
            emit(f"compare_paper_{name}.csv", csv_text(frame))
    if "html" in formats:
        emit("leaderboard.html", render_html(boards, limited, plots, comparisons))
    if "png" in formats:
        plot_dir = out / "plots"
        if plot_dir.is_dir():  # drop plots of boards that no longer exist
            for old in sorted([*plot_dir.glob("*.png"), *plot_dir.glob("*.svg")]):
                if old.name not in plots and old.name.startswith(("radar_", "pareto_")):
                    old.unlink()
        for name in sorted(plots):
            emit(f"plots/{name}", plots[name])
    return written
