"""Plots of a board: a radar chart per backbone like the paper's Fig. 1, and a score-vs-cost Pareto plot.

Why: Fig. 1 is how the paper argues its case; the same picture from our records makes the comparison
direct. Plots are deterministic (Agg backend, fixed hash salt, no PNG metadata) so boards regenerate
byte-identically from the same records.
"""

from __future__ import annotations

import io
import math

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
    "supervised": ("#17becf", "--"),
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


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _setup() -> None:
    plt.rcParams.update({"svg.hashsalt": "saip-bench", "font.size": 9, "figure.dpi": 100})


def radar_png(board: Board, backbone: str) -> bytes | None:
    """Entries of one backbone on every dataset of the board; each axis scaled min..max over entries
    (direction-aware, outward = better) and labelled with its best raw value, as in the paper."""
    rows = board.summary[board.summary["backbone"] == backbone]
    # axes: datasets every drawn entry has (a missing score is never drawn as zero); entries with fewer
    # than three such datasets are left out rather than shrinking the chart for everyone
    rows = rows[rows[board.datasets].notna().sum(axis=1) >= 3]
    datasets = [d for d in board.datasets if len(rows) and rows[d].notna().all()]
    if len(rows) == 0 or len(datasets) < 3:
        return None
    _setup()
    angles = np.linspace(0, 2 * np.pi, len(datasets), endpoint=False)
    fig, ax = plt.subplots(figsize=(6.4, 6.4), subplot_kw={"projection": "polar"})
    radii = {}
    best_labels = []
    for dataset in datasets:
        values = rows[dataset].astype(float)
        lower_better = board.dataset_info[dataset]["direction"] == "min"
        best = values.min() if lower_better else values.max()
        worst = values.max() if lower_better else values.min()
        span = (best - worst) if best != worst else 1.0
        radii[dataset] = 0.25 + 0.75 * (values - worst) / span
        best_labels.append(best)
    for index, (row_index, row) in enumerate(rows.iterrows()):
        r = [radii[d].loc[row_index] for d in datasets]
        if any(math.isnan(v) for v in r):
            r = [0.0 if math.isnan(v) else v for v in r]
        color, style = _style(row["method"], index)
        label = row["method"] if rows["pretrain"].nunique() == 1 else f"{row['method']} ({row['pretrain']})"
        ax.plot([*angles, angles[0]], [*r, r[0]], style, color=color, linewidth=1.8, label=label)
        ax.fill([*angles, angles[0]], [*r, r[0]], color=color, alpha=0.06)
    ax.set_ylim(0, 1.08)
    ax.set_yticks([0.25, 0.625, 1.0])
    ax.set_yticklabels([])
    ax.set_xticks(angles)
    labels = []
    for dataset, best in zip(datasets, best_labels, strict=True):
        arrow = "↓" if board.dataset_info[dataset]["direction"] == "min" else ""
        best_text = f"{best:.1f}" if abs(best) >= 1.5 or best == 0 else f"{best:.3g}"
        labels.append(f"{AXIS_LABELS.get(dataset, dataset)}{arrow}\n{best_text}")
    ax.set_xticklabels(labels)
    family = rows["family"].iloc[0]
    ax.set_title(
        f"{board.name}: {backbone} ({family})\naxis label = best value; axes scaled per dataset", pad=22
    )
    ax.legend(loc="upper right", bbox_to_anchor=(1.28, 1.12), frameon=False)
    fig.tight_layout()
    return _png(fig)


COSTS = (
    ("params_m", "parameters (M)"),
    ("gflops", "GFLOPs (forward, per image)"),
    ("latency_ms", "latency (ms, batch 1)"),
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


def pareto_png(board: Board) -> bytes | None:
    """Normalised mean score of complete entries against each measured cost; the front is drawn."""
    rows = board.summary[board.summary["complete"]]
    if len(rows) == 0:
        return None
    _setup()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (column, label) in zip(axes, COSTS, strict=True):
        data = rows[[column, "norm_score", "method", "backbone"]].dropna()
        for index, (_, row) in enumerate(data.iterrows()):
            color, _ = _style(row["method"], index)
            ax.scatter(row[column], row["norm_score"], color=color, s=36, zorder=3)
            ax.annotate(
                f"{row['method']}/{row['backbone']}",
                (row[column], row["norm_score"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        if len(data):
            front = data.loc[pareto_front(data[column], data["norm_score"])].sort_values(column)
            ax.step(front[column], front["norm_score"], where="post", color="#444444", linewidth=1, zorder=2)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("normalised mean score (0-100)")
    fig.suptitle(f"{board.name}: score vs cost (Pareto front in grey)")
    fig.tight_layout()
    return _png(fig)
