"""The paper's published numbers (``leaderboards/paper/*.csv``) and their comparison with our boards.

Why: the reference numbers are data with provenance and confidence, not prose; a comparison says which
metric it matched and whether the two sides are comparable at all (real data, paper protocol).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from saip_bench.errors import SpecError, UserError
from saip_bench.leaderboard.tables import Board, percent_scale
from saip_bench.specs import DATASET_NAMES, resource_dir

OUTER_COLUMNS = [
    "family",
    "chart",
    "dataset",
    "axis",
    "method",
    "value",
    "metric_presumed",
    "value_confidence",
    "metric_confidence",
    "source",
    "note",
]
FAMILIES = ("vit", "convnet", "hybrid")
# Spellings of one metric across codebases; compared after lower-casing and dropping non-alphanumerics.
METRIC_ALIASES = [
    {"rank1", "r1", "top1", "cmc1", "rank1acc"},
    {"ma", "meanaccuracy"},
    {"ap", "apoks", "keypointap", "segmap", "maskap"},
    {"wholebodyap", "apwholebody", "wholebody"},
    {"miou", "meaniou"},
]


def paper_dir() -> Path:
    """``leaderboards/paper/`` of the checkout, or its copy inside an installed package."""
    return resource_dir("paper")


def load_paper(directory: Path | None = None) -> pd.DataFrame:
    """``fig1_outer.csv`` validated: known datasets and families, numeric values, every column present."""
    path = (directory or paper_dir()) / "fig1_outer.csv"
    if not path.exists():
        raise UserError(f"{path}: the paper's numbers are missing")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in OUTER_COLUMNS if c not in frame.columns]
    if missing:
        raise SpecError(f"{path}: missing columns {missing}")
    bad = sorted(set(frame["dataset"]) - set(DATASET_NAMES)) + sorted(set(frame["family"]) - set(FAMILIES))
    if bad:
        raise SpecError(f"{path}: unknown dataset/family values {bad}")
    try:
        frame["value"] = frame["value"].astype(float)
    except ValueError as exc:
        raise SpecError(f"{path}: non-numeric value ({exc})") from exc
    return frame


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def match_metric(wanted: str, available: list[str]) -> str | None:
    """Our metric key for the paper's presumed metric: exact (normalised) first, then an alias."""
    by_norm = {_norm(name): name for name in available}
    if _norm(wanted) in by_norm:
        return by_norm[_norm(wanted)]
    for group in METRIC_ALIASES:
        if _norm(wanted) in group:
            for candidate in sorted(available):
                if _norm(candidate) in group:
                    return candidate
    return None


def compare_with_paper(board: Board, paper: pd.DataFrame, method: str = "saip") -> pd.DataFrame:
    """One row per (family, dataset) of the paper: its value beside our ``method`` on that family's backbone
    (the paper's presumed metric when our records have it, else our main metric, flagged)."""
    comparable = board.source == "real" and board.track == "finetune"
    ours = board.metrics
    rows = []
    for _, ref in paper.sort_values(["family", "dataset"], kind="mergesort").iterrows():
        entries = board.cells[
            (board.cells["family"] == ref["family"])
            & (board.cells["method"] == method)
            & (board.cells["dataset"] == ref["dataset"])
        ]
        row = {
            "family": ref["family"],
            "dataset": ref["dataset"],
            "paper_method": ref["method"],
            "paper_metric": ref["metric_presumed"],
            "paper_value": ref["value"],
            "our_backbone": "",
            "our_metric": "",
            "our_value": float("nan"),
            "metric_matched": False,
            "comparable": comparable,
            "paper_metric_confidence": ref["metric_confidence"],
            "scale": 1.0,
        }
        if len(entries):
            entry = entries.sort_values("backbone").iloc[0]
            cell_metrics = ours[
                (ours["method"] == method)
                & (ours["backbone"] == entry["backbone"])
                & (ours["pretrain"] == entry["pretrain"])
                & (ours["dataset"] == ref["dataset"])
            ]
            key = match_metric(ref["metric_presumed"], list(cell_metrics["metric"]))
            if key is None:
                key = board.dataset_info[ref["dataset"]]["metric"]
            value = cell_metrics[cell_metrics["metric"] == key]["mean"]
            # Some tasks report fractions, the paper prints percentages: a metric whose values never
            # exceed 1 on this board is read as a fraction and shown x100 beside the paper.
            same_metric = ours[(ours["dataset"] == ref["dataset"]) & (ours["metric"] == key)]["mean"]
            row["scale"] = 100.0 if len(same_metric) and same_metric.abs().max() <= 1.0 else 1.0
            if percent_scale(board.dataset_info[ref["dataset"]]["task"]) != 1.0:
                row["scale"] = 1.0  # a known fraction task: the board already shows it in percent
            row.update(
                our_backbone=entry["backbone"],
                our_metric=key,
                our_value=float(value.iloc[0]) if len(value) else float("nan"),
                metric_matched=_norm(key) == _norm(ref["metric_presumed"])
                or match_metric(ref["metric_presumed"], [key]) is not None,
            )
        rows.append(row)
    return pd.DataFrame(rows)
