"""Records -> pandas tables: per-dataset cells (mean ± std over seeds), direction-aware ranks, summary.

Why: boards are views of records only (ARCHITECTURE.md §4). Aggregates are computed only where every
member exists: a cell needs every planned seed, a summary row needs a complete cell on every dataset of
its board; anything less is shown as incomplete, never silently averaged.

A *board* holds records that are comparable: same data source (synthetic / real) and same protocol track
(``fast`` = linear/frozen probes, ``finetune`` = the paper's protocol). An *entry* (a board row) is one
pretrained model: method x backbone x pretraining preset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from saip_bench.errors import SpecError
from saip_bench.specs import DATASET_NAMES, ResultRecord

ENTRY = ["method", "backbone", "pretrain"]


def _family(backbone: str) -> str:
    from saip_bench.backbones import BACKBONES

    return BACKBONES.meta(backbone).get("family", "?") if backbone in BACKBONES else "?"


def records_frame(records: Iterable[ResultRecord]) -> tuple[pd.DataFrame, int]:
    """One row per record (limited records dropped); returns the frame and how many were dropped."""
    rows, limited = [], 0
    for record in records:
        if record.limited:
            limited += 1
            continue
        prov = record.provenance
        ident = record.identity
        data = prov.get("data", {})
        pretrain = prov.get("pretrain", {})
        rows.append(
            {
                "board": f"{data.get('source', 'unknown')}-{prov.get('track', 'unknown')}",
                "method": ident.method,
                "backbone": ident.backbone,
                "pretrain": pretrain.get("preset", "?"),
                "family": _family(ident.backbone),
                "task": ident.task,
                "dataset": ident.dataset,
                "protocol": ident.protocol,
                "seed": ident.seed,
                "metric": record.main_metric,
                "direction": record.direction,
                "score": record.main_score,
                "scores": dict(record.scores),
                "planned_seeds": tuple(prov.get("seeds", {}).get("planned", [ident.seed])),
                "data_fingerprint": data.get("fingerprint", ""),
                **{
                    key: record.cost.get(key, math.nan)
                    for key in ("params_m", "gflops", "latency_ms", "wall_s")
                },
            }
        )
    columns = [
        "board",
        *ENTRY,
        "family",
        "task",
        "dataset",
        "protocol",
        "seed",
        "metric",
        "direction",
        "score",
        "scores",
        "planned_seeds",
        "data_fingerprint",
        "params_m",
        "gflops",
        "latency_ms",
        "wall_s",
    ]
    return pd.DataFrame(rows, columns=columns), limited


def dataset_order(datasets: Iterable[str]) -> list[str]:
    names = list(DATASET_NAMES)
    return sorted(set(datasets), key=lambda d: (names.index(d) if d in names else len(names), d))


@dataclass
class Board:
    """One comparable set of records and its derived tables."""

    name: str
    datasets: list[str]
    cells: pd.DataFrame  # one row per (entry, dataset)
    summary: pd.DataFrame  # one row per entry
    dataset_info: dict[str, dict[str, str]] = field(default_factory=dict)  # task, metric, direction, protocol
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)  # long: every metric's mean/std per cell

    @property
    def source(self) -> str:
        return self.name.split("-", 1)[0]

    @property
    def track(self) -> str:
        return self.name.split("-", 1)[1]


def _check_consistent(frame: pd.DataFrame, board: str) -> dict[str, dict[str, str]]:
    info: dict[str, dict[str, str]] = {}
    for dataset, group in frame.groupby("dataset", sort=False):
        for column in ("metric", "direction", "task", "protocol", "data_fingerprint"):
            values = sorted(set(group[column]))
            if len(values) > 1:
                raise SpecError(
                    f"board {board}: records for {dataset} disagree on {column} "
                    f"({', '.join(map(str, values))}); "
                    "build boards from records of one data version and protocol"
                )
        first = group.iloc[0]
        info[str(dataset)] = {k: str(first[k]) for k in ("task", "metric", "direction", "protocol")}
    return info


def _rank(values: pd.Series, direction: str) -> pd.Series:
    """Rank 1 = best; ties share the average rank; lower-is-better metrics ranked ascending."""
    return values.rank(ascending=(direction == "min"), method="average")


def build_board(name: str, frame: pd.DataFrame) -> Board:
    info = _check_consistent(frame, name)
    datasets = dataset_order(frame["dataset"])
    expected_seeds = set(frame["seed"])
    for planned in frame["planned_seeds"]:
        expected_seeds.update(planned)
    cell_rows, metric_rows = [], []
    for (method, backbone, pretrain, dataset), group in frame.groupby([*ENTRY, "dataset"], sort=True):
        seeds = sorted(set(group["seed"]))
        scores = group["score"].astype(float)
        cell_rows.append(
            {
                "method": method,
                "backbone": backbone,
                "pretrain": pretrain,
                "family": group["family"].iloc[0],
                "dataset": dataset,
                "n_seeds": len(seeds),
                "seeds": ",".join(map(str, seeds)),
                "complete": set(seeds) >= expected_seeds,
                "mean": float(scores.mean()),
                "std": float(scores.std(ddof=1)) if len(scores) > 1 else math.nan,
                **{key: float(group[key].mean()) for key in ("params_m", "gflops", "latency_ms", "wall_s")},
            }
        )
        all_scores = pd.DataFrame(list(group["scores"]))
        for metric in sorted(all_scores.columns):
            values = all_scores[metric].dropna().astype(float)
            metric_rows.append(
                {
                    "method": method,
                    "backbone": backbone,
                    "pretrain": pretrain,
                    "dataset": dataset,
                    "metric": metric,
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "n_seeds": len(values),
                }
            )
    cells = pd.DataFrame(cell_rows)
    cells["rank"] = math.nan
    for dataset, index in cells.groupby("dataset").groups.items():
        complete = cells.loc[index][cells.loc[index, "complete"]]
        cells.loc[complete.index, "rank"] = _rank(complete["mean"], info[str(dataset)]["direction"])
    summary = _summary(cells, datasets, info)
    return Board(name, datasets, cells, summary, info, pd.DataFrame(metric_rows))


def _summary(cells: pd.DataFrame, datasets: Sequence[str], info: dict[str, dict[str, str]]) -> pd.DataFrame:
    rows = []
    for (method, backbone, pretrain), group in cells.groupby(ENTRY, sort=True):
        by_dataset = group.set_index("dataset")
        complete = [d for d in datasets if d in by_dataset.index and bool(by_dataset.loc[d, "complete"])]
        row = {
            "method": method,
            "backbone": backbone,
            "pretrain": pretrain,
            "family": group["family"].iloc[0],
            "params_m": float(group["params_m"].mean()),
            "gflops": float(group["gflops"].mean()),
            "latency_ms": float(group["latency_ms"].mean()),
            "complete": len(complete) == len(datasets),
            "missing": ",".join(d for d in datasets if d not in complete),
        }
        for dataset in datasets:
            row[dataset] = float(by_dataset.loc[dataset, "mean"]) if dataset in by_dataset.index else math.nan
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["mean_rank"] = math.nan
    summary["norm_score"] = math.nan
    full = summary[summary["complete"]]
    if len(full):
        ranks = pd.DataFrame({d: _rank(full[d], info[d]["direction"]) for d in datasets})
        summary.loc[full.index, "mean_rank"] = ranks.mean(axis=1)
        normalised = pd.DataFrame({d: normalise(full[d], info[d]["direction"]) for d in datasets})
        summary.loc[full.index, "norm_score"] = 100 * normalised.mean(axis=1)
    summary = summary.sort_values(
        ["complete", "mean_rank", "norm_score", *ENTRY],
        ascending=[False, True, False, True, True, True],
        na_position="last",
        kind="mergesort",
    ).reset_index(drop=True)
    return summary


def normalise(values: pd.Series, direction: str) -> pd.Series:
    """Min-max over the compared entries, best = 1, worst = 0 (all equal -> 1)."""
    best, worst = (values.min(), values.max()) if direction == "min" else (values.max(), values.min())
    if best == worst:
        return pd.Series(1.0, index=values.index)
    return (values - worst) / (best - worst)


def build_boards(records: Iterable[ResultRecord]) -> tuple[list[Board], int]:
    """All boards of a record set (sorted by name) and the number of limited records left out."""
    frame, limited = records_frame(records)
    boards = [build_board(str(name), group) for name, group in frame.groupby("board", sort=True)]
    return boards, limited
