"""Records -> pandas tables: per-dataset cells (mean ± std over seeds), direction-aware ranks, summary.

Why: boards are views of records only (ARCHITECTURE.md §4). Aggregates are computed only where every
member exists: a cell needs every planned seed, a summary row needs a complete cell on every dataset of
its board; anything less is shown as incomplete, never silently averaged.

A *board* holds records that are comparable: same data source (synthetic / real) and same protocol track
(``fast`` = linear/frozen probes, ``finetune`` = the paper's protocol). An *entry* (a board row) is one
pretrained model: method x backbone x pretraining preset.

Units: one per board, percent as the paper prints them. Tasks whose official metrics are fractions
(COCO AP, mIoU, CrowdHuman AP/MR/JI, Fashionpedia AP) are multiplied by 100 here, intervals too; the
records keep the metric's own unit. Uncertainty: a cell carries the bootstrap 95% interval of its main
metric over test samples (the mean of the per-seed bounds when there are several seeds) and is marked
``distinct_best`` only when its interval does not overlap the runner-up's (see :func:`mark_distinct`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from saip_bench.errors import SpecError, UserError
from saip_bench.specs import DATASET_NAMES, ResultRecord, get_task_spec

ENTRY = ["method", "backbone", "pretrain"]
# Tasks whose metric functions return fractions in [0, 1]; boards show them x100 (one unit per board).
FRACTION_TASKS = frozenset({"pose", "wholebody", "parsing", "multi_parsing", "detection", "fashion"})


def percent_scale(task: str) -> float:
    """100 for a task that scores fractions, 1 for one that already scores percent."""
    return 100.0 if task in FRACTION_TASKS else 1.0


def _scaled(scores: dict[str, float], factor: float) -> dict[str, float]:
    """Scores x factor, counts (``num_*``) untouched."""
    if factor == 1.0:
        return dict(scores)
    return {k: (v if k.startswith("num_") else v * factor) for k, v in scores.items()}


def _family(backbone: str) -> str:
    from saip_bench.backbones import BACKBONES

    return BACKBONES.meta(backbone).get("family", "?") if backbone in BACKBONES else "?"


def input_size(record: ResultRecord) -> str:
    """The input size the costs were measured at (``HxW``): from the record's cost, else from the task's
    spec (records written before the cost carried it), else empty."""
    cost = record.cost
    if "input_h" in cost and "input_w" in cost:
        return f"{int(cost['input_h'])}×{int(cost['input_w'])}"
    return _spec_input_size(record.identity.task, record.identity.dataset)


@functools.cache
def _spec_input_size(task: str, dataset: str) -> str:
    try:
        height, width = get_task_spec(task, dataset).input_size
    except (SpecError, UserError):
        return ""
    return f"{height}×{width}"


def _record_path(record: ResultRecord) -> str:
    """The file a record was read from (``bench.store.StoredRecord``), absolute; "" for one made in memory."""
    source = getattr(record, "source", None)
    return str(Path(source).resolve()) if source is not None else ""


LIST_SEPARATOR = " / "  # between the distinct values of one cell (a device string may hold commas)
COST_KEYS = ("params_m", "params_m_size_free", "gflops", "latency_ms", "wall_s")


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
        factor = percent_scale(ident.task)
        intervals = record.uncertainty.intervals if record.uncertainty is not None else {}
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
                "score": record.main_score * factor,
                "scores": _scaled(record.scores, factor),
                "intervals": {k: (lo * factor, hi * factor) for k, (lo, hi) in intervals.items()},
                "device": str(prov.get("device", "")),
                "input_size": input_size(record),
                "record_path": _record_path(record),
                "planned_seeds": tuple(prov.get("seeds", {}).get("planned", [ident.seed])),
                "data_fingerprint": data.get("fingerprint", ""),
                **{key: record.cost.get(key, math.nan) for key in COST_KEYS},
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
        "intervals",
        "device",
        "input_size",
        "record_path",
        "planned_seeds",
        "data_fingerprint",
        *COST_KEYS,
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
    devices: list[str] = field(default_factory=list)  # where the costs (latency) were measured

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
        main = str(group["metric"].iloc[0])
        ci_low, ci_high = _seed_interval(list(group["intervals"]), main)
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
                "ci_low": ci_low,
                "ci_high": ci_high,
                **{key: float(group[key].mean()) for key in COST_KEYS},
                "input_size": LIST_SEPARATOR.join(sorted(set(group["input_size"]) - {""})),
                "device": LIST_SEPARATOR.join(sorted(set(group["device"]) - {""})),
                # the cell's records, lowest seed first ("" where records were not loaded from files)
                "record_paths": tuple(group.sort_values("seed", kind="mergesort")["record_path"]),
            }
        )
        all_scores = pd.DataFrame(list(group["scores"]))
        for metric in sorted(all_scores.columns):
            values = all_scores[metric].dropna().astype(float)
            low, high = _seed_interval(list(group["intervals"]), str(metric))
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
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    cells = pd.DataFrame(cell_rows)
    cells["rank"] = math.nan
    for dataset, index in cells.groupby("dataset").groups.items():
        complete = cells.loc[index][cells.loc[index, "complete"]]
        cells.loc[complete.index, "rank"] = _rank(complete["mean"], info[str(dataset)]["direction"])
    cells["distinct_best"] = False
    for dataset, index in cells.groupby("dataset").groups.items():
        complete = cells.loc[index][cells.loc[index, "complete"]]
        best = mark_distinct(complete, info[str(dataset)]["direction"])
        if best is not None:
            cells.loc[best, "distinct_best"] = True
    summary = _summary(cells, datasets, info)
    devices = sorted({d for d in frame["device"] if d})
    return Board(name, datasets, cells, summary, info, pd.DataFrame(metric_rows), devices)


def _seed_interval(intervals: list[dict[str, tuple[float, float]]], metric: str) -> tuple[float, float]:
    """The metric's bootstrap interval: of the one seed, or the mean of the per-seed bounds (NaN unless
    every seed has one)."""
    found = [i[metric] for i in intervals if metric in i]
    if not found or len(found) != len(intervals):
        return math.nan, math.nan
    return float(sum(lo for lo, _ in found) / len(found)), float(sum(hi for _, hi in found) / len(found))


def mark_distinct(cells: pd.DataFrame, direction: str) -> object | None:
    """Index of the best cell when it is distinguishable from the runner-up, else None.

    Rule: the best and the runner-up (by mean) both have a bootstrap interval and the intervals do not
    overlap (max: best low > runner-up high; min: best high < runner-up low). A single entry, a tie or
    a missing interval is never marked: nothing shows the gap is more than test-set noise."""
    if len(cells) < 2:
        return None
    order = cells.sort_values("mean", ascending=(direction == "min"), kind="mergesort")
    best, runner = order.iloc[0], order.iloc[1]
    if best["mean"] == runner["mean"] or any(
        math.isnan(float(v)) for v in (best["ci_low"], best["ci_high"], runner["ci_low"], runner["ci_high"])
    ):
        return None
    apart = best["ci_low"] > runner["ci_high"] if direction != "min" else best["ci_high"] < runner["ci_low"]
    return order.index[0] if apart else None


def _summary(cells: pd.DataFrame, datasets: Sequence[str], info: dict[str, dict[str, str]]) -> pd.DataFrame:
    rows = []
    for (method, backbone, pretrain), group in cells.groupby(ENTRY, sort=True):
        by_dataset = group.set_index("dataset")
        complete = [d for d in datasets if d in by_dataset.index and bool(by_dataset.loc[d, "complete"])]
        size_free = group["params_m_size_free"]
        one_figure = bool(size_free.notna().all())
        row = {
            "method": method,
            "backbone": backbone,
            "pretrain": pretrain,
            "family": group["family"].iloc[0],
            # one figure per backbone: parameters without a position table (whose size follows the
            # input); records written before that figure give the mean of the per-task counts
            "params_m": float(size_free.mean() if one_figure else group["params_m"].mean()),
            "params_basis": "size_free" if one_figure else "task_mean",
            "params_m_low": float(group["params_m"].min()),
            "params_m_high": float(group["params_m"].max()),
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
