"""Plots of a board: a radar chart per backbone like the paper's Fig. 1, and a score-vs-cost Pareto plot.

Why: Fig. 1 is how the paper argues its case; the same picture from our records makes the comparison
direct. Honest scales: every radar axis runs from 0 to a fixed 100 (scores are percent on a board;
lower-is-better metrics are drawn as 100 - value), never from the worst to the best entry, so a
0.5-point gap looks like one; the paper's own values are drawn as a reference polygon where they exist.
The Pareto plot uses the measured costs on their real axes and is drawn only where the costs differ.
Plots are deterministic (Agg backend, fixed SVG hash salt, no dates in metadata) so boards regenerate
byte-identically from the same records; each is written as PNG (150 dpi) and SVG.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saip_bench.leaderboard.tables import Board

AXIS_LABELS = {
    "market1501": "Market",
    "msmt17": "MSMT17",
    "cuhk_pedes": "CUHK-PEDES",
    "icfg_pedes": "ICFG-PEDES",
    "pa100k": "PA100K",
    "peta": "PETAzs",
    "coco": "COCO-Kpt",
    "coco_wholebody": "WholeBody",
    "lip": "LIP",
    "cihp": "CIHP",
    "crowdhuman": "CrowdHuman",
    "fashionpedia": "Fashionpedia",
}
# The paper's Fig. 1 legend colours; other methods cycle through a fixed palette.
METHOD_STYLE = {
    "saip": ("#d62728", "-"),
    "supervised": ("#17becf", "--"),  # the paper preset's ImageNet checkpoint (external)
    "supervised_ids": ("#9edae5", "--"),  # the folder-label method
    "mae": ("#2ca02c", "-"),
    "hap": ("#e377c2", "-"),
    "dino": ("#1f77b4", "-"),
    "solider": ("#bcbd22", "-"),
    "mocov3": ("#ff7f0e", "-"),
    "random": ("#7f7f7f", ":"),
}
PALETTE = ["#8c564b", "#9467bd", "#393b79", "#637939", "#8c6d31", "#843c39"]


def _style(method: str, index: int) -> tuple[str, str]:
    return METHOD_STYLE.get(method, (PALETTE[index % len(PALETTE)], "-"))


AXIS_MAX = 100.0  # percent: the fixed outer ring of every radar axis
PNG_DPI = 150


def encode(fig: plt.Figure) -> dict[str, bytes]:
    """The figure as deterministic PNG and SVG bytes (keys ``png``, ``svg``); closes it."""
    out = {}
    for kind, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=kind, dpi=PNG_DPI, metadata=metadata)
        out[kind] = buffer.getvalue()
    plt.close(fig)
    return out


def _setup() -> None:
    plt.rcParams.update({"svg.hashsalt": "saip-bench", "font.size": 9, "figure.dpi": 100})


def radius(value: float, direction: str) -> float:
    """Position on a 0..100 axis as a fraction of the radius; lower-is-better drawn as 100 - value."""
    shown = AXIS_MAX - value if direction == "min" else value
    return float(np.clip(shown / AXIS_MAX, 0.0, 1.0))


def paper_values(paper: pd.DataFrame | None, family: str) -> dict[str, float]:
    """The paper's Fig. 1 outer value per dataset for a backbone family (percent), if known."""
    if paper is None or not len(paper):
        return {}
    rows = paper[paper["family"] == family]
    return {str(r["dataset"]): float(r["value"]) for _, r in rows.iterrows()}


def radar_figure(board: Board, backbone: str, paper: pd.DataFrame | None = None) -> plt.Figure | None:
    """Entries of one backbone on every dataset of the board, each axis 0..100 (fixed), with the
    paper's values for the backbone's family as a dashed grey reference polygon where it has them."""
    rows = board.summary[board.summary["backbone"] == backbone]
    # axes: datasets every drawn entry has (a missing score is never drawn as zero); entries with fewer
    # than three such datasets are left out rather than shrinking the chart for everyone
    rows = rows[rows[board.datasets].notna().sum(axis=1) >= 3]
    datasets = [d for d in board.datasets if len(rows) and rows[d].notna().all()]
    if len(rows) == 0 or len(datasets) < 3:
        return None
    _setup()
    angles = np.linspace(0, 2 * np.pi, len(datasets), endpoint=False)
    closed = [*angles, angles[0]]
    fig, ax = plt.subplots(figsize=(6.4, 6.4), subplot_kw={"projection": "polar"})
    directions = [board.dataset_info[d]["direction"] for d in datasets]
    for index, (_, row) in enumerate(rows.iterrows()):
        r = [radius(float(row[d]), direction) for d, direction in zip(datasets, directions, strict=True)]
        color, style = _style(row["method"], index)
        label = row["method"] if rows["pretrain"].nunique() == 1 else f"{row['method']} ({row['pretrain']})"
        ax.plot(closed, [*r, r[0]], style, color=color, linewidth=1.8, label=label)
        ax.fill(closed, [*r, r[0]], color=color, alpha=0.06)
    family = str(rows["family"].iloc[0])
    reference = paper_values(paper, family)
    if any(d in reference for d in datasets):
        r = [radius(reference[d], direction) if d in reference else np.nan
             for d, direction in zip(datasets, directions, strict=True)]
        ax.plot(closed, [*r, r[0]], "--", color="#555555", linewidth=1.2, marker="o", markersize=3,
                label="paper Fig. 1 (SAIP*)")
    ax.set_ylim(0, 1.0)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["25", "50", "75", "100"], fontsize=7, color="#777777")
    ax.set_xticks(angles)
    labels = []
    for dataset, direction in zip(datasets, directions, strict=True):
        metric = board.dataset_info[dataset]["metric"]
        shown = f"100−{metric}" if direction == "min" else metric
        labels.append(f"{AXIS_LABELS.get(dataset, dataset)}\n{shown}")
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_title(f"{board.name}: {backbone} ({family})\nevery axis 0-100 (%), outward = better", pad=22)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.12), frameon=False)
    fig.tight_layout()
    return fig


def radar_png(board: Board, backbone: str, paper: pd.DataFrame | None = None) -> bytes | None:
    fig = radar_figure(board, backbone, paper)
    return None if fig is None else encode(fig)["png"]


COSTS = (  # the summary's figures: see the board's params note; GFLOPs and latency at each task's input
    ("params_m", "parameters (M, without position table)"),
    ("gflops", "GFLOPs (forward, per image; mean over tasks)"),
    ("latency_ms", "latency (ms, batch 1; mean over tasks)"),
)


def pareto_front(cost: pd.Series, score: pd.Series) -> list:
    """Entries no other entry dominates (cheaper-or-equal and better-or-equal, one of them strictly)."""
    front = []
    for i in cost.index:
        dominated = any(
            cost[j] <= cost[i] and score[j] >= score[i] and (cost[j] < cost[i] or score[j] > score[i])
            for j in cost.index
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def mean_percent(board: Board, rows: pd.DataFrame) -> pd.Series:
    """Each entry's mean score over the board's datasets in percent (lower-is-better as 100 - value):
    an absolute scale, unlike the min-max normalised score."""
    columns = [(AXIS_MAX - rows[d]) if board.dataset_info[d]["direction"] == "min" else rows[d]
               for d in board.datasets]
    return pd.concat(columns, axis=1).mean(axis=1)


def pareto_figure(board: Board) -> plt.Figure | None:
    """Mean score of complete entries against each measured cost that differs between them; None when
    no cost differs (a plot of identical costs says nothing)."""
    rows = board.summary[board.summary["complete"]]
    if len(rows) < 2:
        return None
    data = rows.assign(_score=mean_percent(board, rows))
    axes_costs = [(c, label) for c, label in COSTS if data[c].dropna().nunique() > 1]
    if not axes_costs:
        return None
    _setup()
    fig, axes = plt.subplots(1, len(axes_costs), figsize=(4.2 * len(axes_costs), 3.8), squeeze=False)
    device = ", ".join(board.devices) or "device not recorded"
    for ax, (column, label) in zip(axes[0], axes_costs, strict=True):
        points = data[[column, "_score", "method", "backbone"]].dropna()
        for index, (_, row) in enumerate(points.iterrows()):
            color, _ = _style(row["method"], index)
            ax.scatter(row[column], row["_score"], color=color, s=36, zorder=3)
            ax.annotate(f"{row['method']}/{row['backbone']}", (row[column], row["_score"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        front = points.loc[pareto_front(points[column], points["_score"])].sort_values(column)
        ax.step(front[column], front["_score"], where="post", color="#444444", linewidth=1, zorder=2)
        ax.set_xlabel(f"{label[:-1]}, {device})" if column == "latency_ms" else label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean score over datasets (%)")
    fig.suptitle(f"{board.name}: score vs cost (Pareto front in grey)")
    fig.tight_layout()
    return fig


def pareto_png(board: Board) -> bytes | None:
    fig = pareto_figure(board)
    return None if fig is None else encode(fig)["png"]
