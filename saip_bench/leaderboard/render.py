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
import os
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from saip_bench.errors import SpecError, UserError
from saip_bench.leaderboard.paper import compare_with_paper, load_paper
from saip_bench.leaderboard.plots import AXIS_LABELS, encode, pareto_figure, radar_figure
from saip_bench.leaderboard.tables import LIST_SEPARATOR, Board, build_boards
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
        "params (M)¹",
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
            (fmt_params(row), _num(row["params_m"])),
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
            out.append((text, _num(cell["mean"]), cell["record_paths"][0]))
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
    costs = [] if folded else cost_headers(cells)
    header = [
        "rank",
        "method",
        "backbone",
        "pretrain",
        f"{info['metric']} {arrow(info['direction'])}",
        *others,
        *costs,
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
        record = cell["record_paths"][0]
        out = [
            (rank, _num(cell["rank"])),
            (cell["method"], cell["method"]),
            (cell["backbone"], cell["backbone"]),
            (cell["pretrain"], cell["pretrain"]),
            (main + (BEST_MARK if cell["distinct_best"] else ""), _num(cell["mean"]), record),
        ]
        for metric in others:
            if metric in entry.index:
                m = entry.loc[metric]
                text = fmt_score(m["mean"], m["std"], m["ci_low"], m["ci_high"])
                out.append((text, _num(m["mean"]), record))
            else:
                out.append(("—", ""))
        if costs:
            out += [
                (fmt_fixed(cell["params_m"], 3), _num(cell["params_m"]), record),
                (fmt_fixed(cell["gflops"], 3), _num(cell["gflops"]), record),
                (fmt_fixed(cell["latency_ms"], 1), _num(cell["latency_ms"]), record),
            ]
        out.append((str(cell["n_seeds"]), str(cell["n_seeds"])))
        rows.append(out)
    return header, rows


def cost_headers(cells: pd.DataFrame) -> list[str]:
    """Cost columns of a dataset table, labelled with the input size and the device they were measured
    at (each as recorded; several are listed when the records differ)."""
    size = _joined(cells["input_size"]) or "input size not recorded"
    device = _joined(cells["device"]) or "device not recorded"
    return [f"params (M) @{size}", f"GFLOPs @{size}", f"latency (ms, batch 1, {device})"]


def _joined(values: Iterable[str]) -> str:
    return LIST_SEPARATOR.join(sorted({v for value in values for v in str(value).split(LIST_SEPARATOR) if v}))


def fmt_fixed(value: float, digits: int) -> str:
    """Costs: fixed decimals per column."""
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def fmt_params(row: pd.Series) -> str:
    """The summary's one parameter figure; records without it give the per-task range, labelled."""
    if row["params_basis"] == "size_free" or row["params_m_low"] == row["params_m_high"]:
        return fmt_fixed(row["params_m"], 3)
    return f"{fmt_fixed(row['params_m_low'], 3)}–{fmt_fixed(row['params_m_high'], 3)} (by input size)"


PARAMS_NOTE = (
    "¹ params: the backbone's parameters without a learnable position-embedding table, whose size follows "
    "each task's input size (a ViT has one vector per patch); one number per backbone. Each dataset's "
    "table gives params, forward GFLOPs (one image) and batch-1 latency at that task's input size, on "
    "the device named in its header. A range marked 'by input size' comes from records written before "
    "this figure was recorded: the smallest and largest per-task count."
)


def _num(value: float) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[tuple[str, ...]]],
                   base: Path | None = None) -> str:
    """A pipe table; a cell ``(text, sort value, record path)`` links to its record relative to ``base``
    (the board's folder), as in the HTML board."""
    def clean(text: str) -> str:
        return text.replace("|", "\\|")

    def cell_text(cell: Sequence[str]) -> str:
        href = record_href(cell[2], base) if len(cell) > 2 else ""
        if not href:
            return clean(cell[0])
        # brackets escaped: the interval "[low, high]" sits inside the link text
        label = clean(cell[0]).replace("[", "\\[").replace("]", "\\]")
        return f"[{label}]({href})"

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell_text(cell) for cell in row) + " |" for row in rows]
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
    boards: Sequence[Board], limited: int, plots: dict[str, bytes], comparisons: dict[str, pd.DataFrame],
    base: Path | None = None,
) -> str:
    """The Markdown board; ``base`` is the folder it is written to (score cells link to their records)."""
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
        parts.append(markdown_table(*summary_rows(board), base))
        parts += ["", PARAMS_NOTE]
        for dataset in board.datasets:
            info = board.dataset_info[dataset]
            parts += [
                "",
                f"### {AXIS_LABELS.get(dataset, dataset)} ({dataset}, task {info['task']}, protocol "
                f"`{info['protocol']}`, main metric {info['metric']} {arrow(info['direction'])})",
                "",
            ]
            parts.append(markdown_table(*dataset_rows(board, dataset), base))
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
                markdown_table(header, rows, base),
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
.filters label { margin-right: 1rem; } td a { color: inherit; text-decoration: none; }
td a:hover { text-decoration: underline; }
"""

FILTER_SCRIPT = """
function applyFilters() {
  var want = {};
  document.querySelectorAll('select.filter').forEach(function (select) {
    want[select.getAttribute('data-key')] = select.value;
  });
  var words = document.getElementById('filter').value.toLowerCase().split(/\\s+/).filter(Boolean);
  document.querySelectorAll('section.board').forEach(function (board) {
    board.style.display = !want.track || board.getAttribute('data-track') === want.track ? '' : 'none';
  });
  document.querySelectorAll('table.sortable tbody tr').forEach(function (row) {
    var keep = ['method', 'backbone'].every(function (key) {
      var value = row.getAttribute('data-' + key);
      return !want[key] || value === null || value === want[key];
    });
    var text = (row.getAttribute('data-entry') || row.textContent).toLowerCase();
    keep = keep && words.every(function (w) { return text.indexOf(w) >= 0; });
    row.style.display = keep ? '' : 'none';
  });
}
document.querySelectorAll('select.filter, #filter').forEach(function (control) {
  control.addEventListener('input', applyFilters);
  control.addEventListener('change', applyFilters);
});
"""


def html_table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[tuple[str, ...]]],
               base: Path | None = None, row_attrs: Sequence[dict[str, str]] | None = None) -> str:
    """A sortable table in a scroll container. A cell ``(text, sort value, record path)`` links to its
    record, relative to ``base`` (the board's folder); rows carry ``row_attrs`` as ``data-*`` for the
    filters."""
    numeric = []
    for col in range(len(header)):
        values = [row[col][1] for row in rows if row[col][1] != ""]
        numeric.append(bool(values) and all(_is_number(v) for v in values))
    head = "".join(
        f'<th data-type="{"num" if numeric[i] else "text"}">{html.escape(h)}</th>'
        for i, h in enumerate(header)
    )
    body = []
    for index, row in enumerate(rows):
        tds = "".join(
            f'<td{"" if numeric[i] else " class=t"} data-v="{html.escape(cell[1])}">'
            f"{_linked(cell[0], cell[2] if len(cell) > 2 else '', base)}</td>"
            for i, cell in enumerate(row)
        )
        attrs = "".join(f' data-{key}="{html.escape(value)}"'
                        for key, value in sorted((row_attrs[index] if row_attrs else {}).items()))
        body.append(f"<tr{attrs}>{tds}</tr>")
    return (
        f'<div class="scroll"><table class="sortable" id="{html.escape(table_id)}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def relative_record(record: str, base: Path | None) -> str:
    """A record file's path relative to the board's folder (POSIX; never absolute, so boards stay
    byte-identical wherever the run folder sits); empty for a record not loaded from a file."""
    if not record or base is None:
        return ""
    return Path(os.path.relpath(record, base.resolve())).as_posix()


def record_href(record: str, base: Path | None) -> str:
    """``relative_record`` as a URL (quoted)."""
    return urllib.parse.quote(relative_record(record, base))


def _linked(text: str, record: str, base: Path | None) -> str:
    href = record_href(record, base)
    if not href:
        return html.escape(text)
    return f'<a href="{html.escape(href)}" title="its record">{html.escape(text)}</a>'


def entry_attrs(board: Board, rows: Sequence[Sequence[tuple[str, ...]]]) -> list[dict[str, str]]:
    """Filter attributes of entry rows (method, backbone and pretrain are columns 1-3 of the summary and
    dataset tables)."""
    return [{"method": r[1][1], "backbone": r[2][1],
             "entry": f"{r[1][1]} {r[2][1]} {r[3][1]} {board.track} {board.source}"} for r in rows]


def _filter_select(key: str, values: Iterable[str]) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>'
                      for v in sorted(set(values)))
    return (f'<label>{key} <select class="filter" id="filter-{key}" data-key="{key}">'
            f'<option value="">all</option>{options}</select></label>')


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def render_html(
    boards: Sequence[Board], limited: int, plots: dict[str, bytes], comparisons: dict[str, pd.DataFrame],
    base: Path | None = None,
) -> str:
    """The page; ``base`` is the folder it is written to (score cells link to their records from there)."""
    methods = [m for board in boards for m in board.summary["method"]]
    backbones = [b for board in boards for b in board.summary["backbone"]]
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<title>saip-bench leaderboard</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>saip-bench leaderboard</h1>",
        '<p class="note">Built from result records only: every score links to the record it comes from. '
        "Click a column header to sort; pick a method, backbone or track, or type words (method, backbone, "
        "pretraining, track), to filter rows.</p>",
        '<div class="filters">' + _filter_select("method", methods) + _filter_select("backbone", backbones)
        + _filter_select("track", [board.track for board in boards])
        + '<input id="filter" type="search" placeholder="filter rows, e.g. saip vit_tiny"></div>',
    ]
    if limited:
        parts.append(f'<p class="note">{limited} record(s) from --limit runs were left out.</p>')
    for board in boards:
        parts.append(f'<section class="board" data-track="{html.escape(board.track)}" '
                     f'data-source="{html.escape(board.source)}">')
        parts.append(f'<h2 id="board-{html.escape(board.name)}">Board {html.escape(board.name)}</h2>')
        parts.append(f'<p class="note">{html.escape(board_intro(board))}</p>')
        parts.append(f'<p class="note">{html.escape(interval_line(board))}</p><h3>Summary</h3>')
        header, rows = summary_rows(board)
        parts.append(html_table(f"summary-{board.name}", header, rows, base, entry_attrs(board, rows)))
        parts.append(f'<p class="note">{html.escape(PARAMS_NOTE)}</p>')
        for dataset in board.datasets:
            info = board.dataset_info[dataset]
            parts.append(
                f"<h3>{html.escape(AXIS_LABELS.get(dataset, dataset))} ({html.escape(dataset)}, "
                f"protocol {html.escape(info['protocol'])}, main metric {html.escape(info['metric'])} "
                f"{arrow(info['direction'])})</h3>"
            )
            header, rows = dataset_rows(board, dataset)
            parts.append(html_table(f"{board.name}-{dataset}", header, rows, base, entry_attrs(board, rows)))
            header, rows = dataset_rows(board, dataset, folded=True)
            if len(header) > 6:  # rank, method, backbone, pretrain, main, seeds + folded metrics
                parts.append(
                    f"<details><summary>{len(header) - 6} more metrics (per class / per threshold)</summary>"
                    + html_table(f"{board.name}-{dataset}-all", header, rows, base, entry_attrs(board, rows))
                    + "</details>"
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
            attrs = [{"method": "saip", "backbone": row[4][1]} for row in rows]  # our side: saip entries
            parts.append(html_table(f"paper-{board.name}", header, rows, base, attrs))
        parts.append("</section>")
    parts.append(f"<script>{SORT_SCRIPT}{FILTER_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ LaTeX
# Symbols the tables print, as LaTeX (after pandas' own escaping of & % $ # _ { } ~ ^ \).
LATEX_SYMBOLS = {
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "★": r"$\star$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "−": r"$-$",
    "—": "---",
    "–": "--",
    "¹": r"\textsuperscript{1}",
}


def latex_table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, ...]]]) -> str:
    """One ``tabular`` (booktabs rules) of the same texts as the Markdown table, through pandas' Styler:
    text columns left-aligned, numeric ones right-aligned."""
    frame = pd.DataFrame([[cell[0] for cell in row] for row in rows], columns=list(header))
    align = "".join(
        "r" if rows and all(_is_number(row[i][1]) or row[i][1] == "" for row in rows)
        and any(row[i][1] != "" for row in rows) else "l"
        for i in range(len(header))
    )
    styler = frame.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, column_format=align)
    for symbol, command in LATEX_SYMBOLS.items():
        text = text.replace(symbol, command)
    return text


def render_latex(board: Board) -> str:
    """A board's tables as LaTeX tabulars (summary, then each dataset), to paste or input; the
    preamble needs the booktabs package."""
    parts = [
        f"% saip-bench board {board.name}: generated from result records (saip-bench leaderboard).",
        r"% Needs \usepackage{booktabs}. Scores in percent; [low, high] = bootstrap 95% interval.",
        "",
        "% Summary",
        latex_table(*summary_rows(board)),
    ]
    for dataset in board.datasets:
        info = board.dataset_info[dataset]
        parts += ["", f"% {AXIS_LABELS.get(dataset, dataset)} ({dataset}), main metric {info['metric']}",
                  latex_table(*dataset_rows(board, dataset))]
    return "\n".join(parts)


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


def cells_for_csv(board: Board, base: Path) -> pd.DataFrame:
    """The board's cells with their records as relative paths (``;`` between seeds), no absolute paths."""
    records = [";".join(relative_record(r, base) for r in paths if r)
               for paths in board.cells["record_paths"]]
    return board.cells.drop(columns=["record_paths"]).assign(records=records, board=board.name)


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.6g")


def write_boards(
    records: Sequence[ResultRecord],
    out_dir: str | Path,
    compare: str | None = None,
    formats: Sequence[str] = ("md", "csv", "tex", "html", "png"),
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
        emit("leaderboard.md", render_markdown(boards, limited, plots, comparisons, out))
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
                pd.concat([cells_for_csv(b, out) for b in boards], ignore_index=True)
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
    if "tex" in formats:
        for board in boards:
            emit(f"leaderboard_{board.name}.tex", render_latex(board))
    if "html" in formats:
        emit("leaderboard.html", render_html(boards, limited, plots, comparisons, out))
    if "png" in formats:
        plot_dir = out / "plots"
        if plot_dir.is_dir():  # drop plots of boards that no longer exist
            for old in sorted([*plot_dir.glob("*.png"), *plot_dir.glob("*.svg")]):
                if old.name not in plots and old.name.startswith(("radar_", "pareto_")):
                    old.unlink()
        for name in sorted(plots):
            emit(f"plots/{name}", plots[name])
    return written
