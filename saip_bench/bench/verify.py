"""Regression gate: compare records against expected scores (``saip-bench verify``).

Why: users re-run the benchmark in their own CI after a change; a score that drops by more than the
tolerance in the metric's bad direction must fail the job, with a table saying which one and by how much.

Expected file (JSON or YAML; ``saip-bench verify --write-expected`` writes one from records)::

    tolerance: 0.5            # optional default, in metric units
    expected:
      - {method: saip, backbone: vit_tiny, dataset: market1501, score: 61.2}
      - {method: saip, backbone: vit_tiny, dataset: crowdhuman, metric: MR, score: 80.0, tolerance: 2}

Optional keys per entry: ``task``, ``protocol``, ``seed`` (default: mean over the seeds found),
``metric`` (default: the record's main metric), ``tolerance``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from saip_bench.errors import SpecError
from saip_bench.specs import ResultRecord, StrictModel, _validate, load_yaml

MATCH_KEYS = ("method", "backbone", "task", "dataset", "protocol", "seed")


class ExpectedScore(StrictModel):
    method: str
    backbone: str
    dataset: str
    task: str | None = None
    protocol: str | None = None
    seed: int | None = None
    metric: str | None = None
    score: float
    tolerance: float | None = Field(default=None, ge=0)


class ExpectedFile(StrictModel):
    tolerance: float | None = Field(default=None, ge=0)
    expected: list[ExpectedScore] = Field(min_length=1)


def load_expected(path: str | Path) -> ExpectedFile:
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise SpecError(f"{path}: file not found") from exc
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON ({exc})") from exc
    else:
        data = load_yaml(path)
    expected: ExpectedFile = _validate(ExpectedFile, data, path)
    return expected


@dataclass
class Check:
    expected: ExpectedScore
    metric: str
    observed: float | None
    n_records: int
    tolerance: float
    direction: str

    @property
    def delta(self) -> float:
        """Observed minus expected, signed so that positive = better."""
        if self.observed is None:
            return math.nan
        diff = self.observed - self.expected.score
        return -diff if self.direction == "min" else diff

    @property
    def status(self) -> str:
        if self.observed is None:
            return "missing"
        if self.delta < -self.tolerance:
            return "regression"
        if self.delta > self.tolerance:
            return "better"
        return "ok"

    def label(self) -> str:
        e = self.expected
        parts = [e.method, e.backbone, e.task or "*", e.dataset, e.protocol or "*"]
        return "/".join(parts) + (f" seed {e.seed}" if e.seed is not None else "")


def run_checks(
    records: Sequence[ResultRecord], expected: ExpectedFile, tolerance: float | None
) -> list[Check]:
    """One check per expected entry; ``tolerance`` (command line) overrides the file's default."""
    usable = [r for r in records if not r.limited]
    checks = []
    for entry in expected.expected:
        wanted = {k: getattr(entry, k) for k in MATCH_KEYS if getattr(entry, k) is not None}
        matches = [r for r in usable if all(getattr(r.identity, k) == v for k, v in wanted.items())]
        metric = entry.metric or (matches[0].main_metric if matches else "?")
        values = [r.scores[metric] for r in matches if metric in r.scores]
        tol = entry.tolerance if entry.tolerance is not None else tolerance
        if tol is None:
            tol = expected.tolerance if expected.tolerance is not None else 0.0
        checks.append(
            Check(
                expected=entry,
                metric=metric,
                observed=sum(values) / len(values) if values else None,
                n_records=len(values),
                tolerance=float(tol),
                direction=matches[0].direction if matches else "max",
            )
        )
    return checks


def expected_from_records(records: Sequence[ResultRecord], tolerance: float | None = None) -> dict[str, Any]:
    """Snapshot: mean main score over seeds per (method, backbone, task, dataset, protocol)."""
    groups: dict[tuple[str, ...], list[ResultRecord]] = {}
    for record in records:
        if record.limited:
            continue
        ident = record.identity
        key = (ident.method, ident.backbone, ident.task, ident.dataset, ident.protocol)
        groups.setdefault(key, []).append(record)
    entries = []
    for key in sorted(groups):
        group = groups[key]
        metric = group[0].main_metric
        score = sum(r.scores[metric] for r in group) / len(group)
        entries.append(
            {**dict(zip(MATCH_KEYS[:5], key, strict=True)), "metric": metric, "score": round(score, 6)}
        )
    out: dict[str, Any] = {"expected": entries}
    if tolerance is not None:
        out["tolerance"] = tolerance
    return out
