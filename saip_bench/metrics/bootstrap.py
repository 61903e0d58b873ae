"""Bootstrap 95% intervals over test samples, computed by the metric code from the arrays it scores.

Why: one seed and one number make a 0.4-point gap look like a ranking. A percentile bootstrap over the
evaluation units (queries for ReID and retrieval; images for attributes, COCO keypoints / WholeBody,
parsing, detection and Fashionpedia) says how much of a score is the luck of the test set. It resamples
*predictions* (never retrains), so it costs seconds, and it is a pure function of the same per-sample
arrays the metric already built.

How each family is resampled (a resample draws ``n`` units with replacement; ``counts[b, i]`` is how
often unit ``i`` is drawn in resample ``b``, so every statistic is a weighted version of the metric):

- **ratio of sums** (ReID, retrieval, CrowdHuman JI): per-unit values and a per-unit denominator (a ReID
  query without a valid match has denominator 0, as the metric skips it);
- **attributes**: per-sample TP/TN/positive/negative indicators (label-based mA) and per-sample
  instance ratios (Acc/Prec/Rec, F1 from the averaged Prec and Rec);
- **confusion** (LIP, CIHP semantic): per-image confusion matrices summed with the counts;
- **CIHP AP^r**: per part class, each prediction's image and its hit/miss at every IoU threshold in the
  metric's score order, and the GT parts per image; VOC AP re-computed with the drawn images' entries
  weighted by their counts;
- **COCO AP** (keypoints, WholeBody, Fashionpedia): the official evaluator's own per-image matches
  (``evalImgs`` after ``evaluate()``) are accumulated again with each image's detections counted
  ``counts[i]`` times — exactly pycocotools' ``accumulate`` on a list holding each drawn image
  ``counts[i]`` times in a row (detections with exactly equal scores may order differently);
- **CrowdHuman AP / MR**: the per-image Caltech TP/FP lists merged, each drawn image's entries repeated
  (the trapezoid AP has no envelope, so repeated points are kept, not weighted).

Metrics offer their statistic to the :func:`collecting` context (opened once per unit by the task
runner); outside it they do nothing extra. Every interval is deterministic for a given seed
(``numpy.random.default_rng(seed)``); the number of resamples is configurable (default 1000).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
CHUNK = 64  # resamples drawn per batch: bounds memory at CHUNK x n counts
EPS_ATTR = 1e-20  # the attribute metric's epsilon

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]  # counts (b, n) -> metric -> values (b,)


@dataclass(frozen=True)
class BootstrapConfig:
    """How many resamples, which seed, which level (two-sided percentile interval)."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if self.resamples < 2:
            raise ValueError(f"resamples must be >= 2, got {self.resamples}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")


def resample_indices(n: int, config: BootstrapConfig) -> Iterator[np.ndarray]:
    """Batches of (b, n) unit indices drawn with replacement; the same seed gives the same resamples."""
    if n < 1:
        raise ValueError("bootstrap needs at least one unit")
    rng = np.random.default_rng(config.seed)
    for start in range(0, config.resamples, CHUNK):
        yield rng.integers(0, n, size=(min(CHUNK, config.resamples - start), n))


def resample_counts(n: int, config: BootstrapConfig) -> Iterator[np.ndarray]:
    """The same resamples as (b, n) int64 counts: how often each unit was drawn."""
    for drawn in resample_indices(n, config):
        b = drawn.shape[0]
        flat = (drawn + n * np.arange(b)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n)


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """(low, high) percentiles of the resampled statistic; NaN resamples (undefined metric) are left out."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return (float(low), float(high))


def bootstrap(statistic: Statistic, n: int, config: BootstrapConfig) -> dict[str, tuple[float, float]]:
    """Percentile interval of every metric ``statistic`` returns, over ``config.resamples`` resamples."""
    batches: dict[str, list[np.ndarray]] = {}
    for counts in resample_counts(n, config):
        for key, values in statistic(counts).items():
            batches.setdefault(key, []).append(np.asarray(values, dtype=np.float64))
    return {key: percentile_interval(np.concatenate(parts), config.level) for key, parts in batches.items()}


# ------------------------------------------------------------------------------ statistics per family
def ratio_statistic(values: dict[str, np.ndarray], weights: np.ndarray | None = None) -> Statistic:
    """sum(counts * weights * value) / sum(counts * weights) per metric: a (filtered) mean over units.

    ``weights`` is 1 for a unit in the denominator, 0 for one the metric skips (None: all count)."""
    n = len(next(iter(values.values())))
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    matrix = np.stack([np.asarray(v, dtype=np.float64) * w for v in values.values()], axis=1)  # (n, k)
    keys = list(values)

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        counts = counts.astype(np.float64)
        den = counts @ w
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (counts @ matrix) / den[:, None]
        return {key: out[:, j] for j, key in enumerate(keys)}

    return statistic


def attributes_statistic(gt: np.ndarray, pred: np.ndarray) -> Statistic:
    """mA, Acc, Prec, Rec, F1 (percent) of resampled rows of (N, A) 0/1 labels and boolean predictions."""
    positive = gt == 1
    per_label = {
        "tp": (positive & pred).astype(np.float64),
        "tn": (~positive & ~pred).astype(np.float64),
        "pos": positive.astype(np.float64),
        "neg": (~positive).astype(np.float64),
    }
    intersect = np.sum(positive & pred, axis=1).astype(np.float64)
    instance = np.stack([
        intersect / (np.sum(positive | pred, axis=1) + EPS_ATTR),
        intersect / (np.sum(pred, axis=1) + EPS_ATTR),
        intersect / (np.sum(positive, axis=1) + EPS_ATTR),
    ], axis=1)  # (N, 3): Acc, Prec, Rec per sample

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        counts = counts.astype(np.float64)
        sums = {key: counts @ value for key, value in per_label.items()}  # (b, A)
        ma = ((sums["tp"] / (sums["pos"] + EPS_ATTR) + sums["tn"] / (sums["neg"] + EPS_ATTR)) / 2).mean(1)
        acc, prec, rec = ((counts @ instance) / counts.sum(1, keepdims=True)).T
        f1 = 2 * prec * rec / (prec + rec + EPS_ATTR)
        return {"mA": 100 * ma, "Acc": 100 * acc, "Prec": 100 * prec, "Rec": 100 * rec, "F1": 100 * f1}

    return statistic


def confusion_statistic(per_image: np.ndarray) -> Statistic:
    """mIoU, pixel_acc, mean_acc (fractions) of the summed per-image (n, C, C) confusion matrices."""
    n, c, _ = per_image.shape
    flat = per_image.reshape(n, c * c).astype(np.float64)
    diagonal = np.arange(c) * (c + 1)

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        total = (counts.astype(np.float64) @ flat).reshape(-1, c, c)
        tp = total.reshape(-1, c * c)[:, diagonal]
        gt_count, pred_count = total.sum(2), total.sum(1)
        iou = tp / np.maximum(1.0, gt_count + pred_count - tp)
        return {
            "mIoU": iou.mean(1),
            "pixel_acc": tp.sum(1) / np.maximum(1.0, gt_count.sum(1)),
            "mean_acc": (tp / np.maximum(1.0, gt_count)).mean(1),
        }

    return statistic


@dataclass
class _CocoCategory:
    """One category's matches over all images, in the evaluator's score order."""

    image: np.ndarray  # (D,) image index of each detection, sorted by score
    tps: np.ndarray  # (S, D) float
    fps: np.ndarray  # (S, D) float
    positives: np.ndarray  # (n,) non-ignored GT per image
    slots: np.ndarray  # which of the S threshold slots enter the AP


def coco_categories(evaluator: Any, slots_of: Callable[[int, tuple[int, ...]], list[int]] | None = None,
                    ) -> tuple[list[_CocoCategory], np.ndarray]:
    """Per-category match arrays from a COCOeval-like ``evaluator`` after ``evaluate()`` (area "all",
    the largest ``maxDets``), and pycocotools' recall thresholds.

    ``slots_of(category_index, shape)`` picks the flattened threshold slots (of the per-detection match
    array's leading ``shape``) that the AP averages (default: all; Fashionpedia's AP^(IoU+F1) leaves out
    the "-1" slots). An unmatched detection is 0 in pycocotools' ``dtMatches`` and -1 in xtcocotools'
    (whose ``accumulate`` tests ``dtm >= 0``)."""
    unmatched = -1 if type(evaluator).__module__.startswith("xtcocotools") else 0
    p = evaluator.params
    num_img = len(p.imgIds)
    num_area = len(p.areaRng)
    area = list(p.areaRngLbl).index("all")
    max_det = p.maxDets[-1]
    cat_ids = p.catIds if p.useCats else [-1]
    out = []
    for k in range(len(cat_ids)):
        offset = k * num_area * num_img + area * num_img
        scores, matches, ignores, images = [], [], [], []
        positives = np.zeros(num_img)
        for i in range(num_img):
            e = evaluator.evalImgs[offset + i]
            if e is None:
                continue
            m = np.asarray(e["dtMatches"])
            s = m.shape[:-1]
            flat = (int(np.prod(s)), m.shape[-1])  # reshape(-1, 0) fails on an image without detections
            scores.append(np.asarray(e["dtScores"][:max_det], dtype=np.float64))
            matches.append(m.reshape(flat)[:, :max_det])
            ignores.append(np.asarray(e["dtIgnore"]).reshape(flat)[:, :max_det])
            images.append(np.full(len(scores[-1]), i))
            positives[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        if not scores:
            continue
        num_slots = int(np.prod(s))
        score = np.concatenate(scores)
        order = np.argsort(-score, kind="mergesort")
        dtm = np.concatenate(matches, axis=1)[:, order]
        dti = np.concatenate(ignores, axis=1)[:, order].astype(bool)
        matched = dtm >= 0 if unmatched == -1 else dtm != 0
        tps = matched & ~dti
        fps = ~matched & ~dti
        slots = np.arange(num_slots) if slots_of is None else np.asarray(slots_of(k, s), dtype=int)
        out.append(_CocoCategory(np.concatenate(images)[order], tps[slots].astype(np.float64),
                                 fps[slots].astype(np.float64), positives, slots))
    return out, np.asarray(p.recThrs, dtype=np.float64)


def coco_ap_statistic(categories: list[_CocoCategory], rec_thrs: np.ndarray, key: str = "AP") -> Statistic:
    """COCO AP (fraction): 101-point interpolated precision averaged over categories x threshold slots
    with any non-ignored GT in the resample, as pycocotools' ``accumulate`` + ``summarize``."""
    num_rec = len(rec_thrs)

    def one(counts: np.ndarray) -> float:
        total, entries = 0.0, 0
        for cat in categories:
            positives = float(counts @ cat.positives)
            if positives == 0:
                continue  # pycocotools leaves -1 here: not averaged
            entries += len(cat.slots)
            if cat.image.size == 0:
                continue
            w = counts[cat.image].astype(np.float64)
            tp = np.cumsum(cat.tps * w, axis=1)
            fp = np.cumsum(cat.fps * w, axis=1)
            rc = tp / positives
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
            d = pr.shape[1]
            for s in range(len(cat.slots)):
                index = np.searchsorted(rc[s], rec_thrs, side="left")
                inside = index < d
                total += float(pr[s, index[inside]].sum())
        return total / (entries * num_rec) if entries else float("nan")

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        return {key: np.array([one(row) for row in counts])}

    return statistic


def caltech_statistic(image: np.ndarray, scores: np.ndarray, flags: np.ndarray, positives: np.ndarray,
                      mr_reference: tuple[float, ...]) -> Statistic:
    """CrowdHuman AP (trapezoid) and MR^-2 of the merged per-image TP/FP lists, images resampled."""
    order = np.argsort(-scores, kind="stable")
    image, flags = image[order], flags[order]
    is_tp, is_fp = (flags == 1).astype(np.float64), (flags == 0).astype(np.float64)
    references = np.asarray(mr_reference)

    def one(counts: np.ndarray) -> tuple[float, float]:
        positive = float(counts @ positives)
        repeats = counts[image]
        if positive <= 0:
            return float("nan"), float("nan")
        if not repeats.any():
            return 0.0, 1.0
        # each point repeated, not weighted: the trapezoid AP (no envelope) sees every intermediate point
        tp = np.cumsum(np.repeat(is_tp, repeats))
        fp = np.cumsum(np.repeat(is_fp, repeats))
        recall = tp / positive
        precision = tp / (tp + fp)
        ap = float(np.sum((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) / 2))
        fppi = fp / counts.sum()
        miss = 1.0 - recall
        first = np.searchsorted(fppi, references, side="left")  # fppi is non-decreasing
        picks = np.where(first < len(fppi), miss[np.minimum(first, len(fppi) - 1)], miss[-1])
        with np.errstate(divide="ignore"):
            return ap, float(np.exp(np.log(picks).mean()))

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        values = np.array([one(row) for row in counts]).reshape(-1, 2)
        return {"AP": values[:, 0], "MR": values[:, 1]}

    return statistic


def jaccard_statistic(ratios: np.ndarray, counted: np.ndarray) -> Statistic:
    """CrowdHuman JI: per score threshold sum(counts * ratio) / sum(counts * counted), then the maximum."""
    ratios, counted = np.asarray(ratios, np.float64), np.asarray(counted, np.float64)

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        counts = counts.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_tau = (counts @ ratios) / (counts @ counted)
        return {"JI": np.nanmax(np.where(np.isnan(per_tau), -np.inf, per_tau), axis=1)}

    return statistic


@dataclass
class PartClass:
    """One CIHP part class's predictions over all images, in the metric's score order."""

    image: np.ndarray  # (P,) image index of each prediction
    hits: np.ndarray  # (P, T) 1.0 where the prediction's best IoU with a GT part passes threshold t
    gt: np.ndarray  # (n,) GT instance parts of this class per image


def part_ap_statistic(classes: list[PartClass], thresholds: tuple[float, ...]) -> Statistic:
    """CIHP AP^r (fractions): per class VOC AP with the precision envelope at each IoU threshold, then the
    mean over classes with a GT part in the resample; ``APr@t``, ``APr50`` and ``APr_vol`` (mean over t).

    A drawn image's predictions count ``counts[i]`` times: the same as repeating them in the ranked list
    (repeated hits raise precision step by step, repeated misses leave recall where it was, so the
    envelope's area is unchanged)."""
    half = list(thresholds).index(0.5) if 0.5 in thresholds else None
    eps = np.finfo(np.float64).eps

    def one(counts: np.ndarray) -> np.ndarray:
        per_class = []
        for part in classes:
            positives = float(counts @ part.gt)
            if positives == 0:
                continue  # no GT part of this class drawn: left out of the class mean, as in the metric
            w = counts[part.image].astype(np.float64)
            tp = np.cumsum(part.hits.T * w, axis=1)  # (T, P)
            fp = np.cumsum((1.0 - part.hits.T) * w, axis=1)
            recall = np.concatenate([np.zeros((len(thresholds), 1)), tp / positives,
                                     np.ones((len(thresholds), 1))], axis=1)
            precision = np.concatenate([np.zeros((len(thresholds), 1)), tp / np.maximum(tp + fp, eps),
                                        np.zeros((len(thresholds), 1))], axis=1)
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            per_class.append(np.sum(np.diff(recall, axis=1) * envelope[:, 1:], axis=1))
        if not per_class:
            return np.full(len(thresholds), np.nan)
        return np.mean(per_class, axis=0)

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.array([one(row) for row in counts]).reshape(-1, len(thresholds))
        out = {f"APr@{t:.1f}": rows[:, k] for k, t in enumerate(thresholds)}
        out["APr50"] = rows[:, half] if half is not None else np.full(len(rows), np.nan)
        out["APr_vol"] = rows.mean(axis=1)
        return out

    return statistic


# ------------------------------------------------------------------------------ collection per unit
@dataclass
class Collector:
    """Intervals offered by the metrics called inside one :func:`collecting` block."""

    config: BootstrapConfig
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)  # unit name -> how many were resampled
    seconds: float = 0.0

    def summary(self) -> dict[str, Any] | None:
        """The record's ``uncertainty`` field (None when no metric offered a statistic)."""
        finite = {k: v for k, v in self.intervals.items() if all(np.isfinite(v))}  # JSON has no NaN
        if not finite:
            return None
        unit, n = next(iter(self.units.items()))
        return {
            "method": "percentile bootstrap over test samples (predictions resampled, no retraining)",
            "level": self.config.level,
            "resamples": self.config.resamples,
            "seed": self.config.seed,
            "unit": unit,
            "n_units": n,
            "intervals": {key: [lo, hi] for key, (lo, hi) in sorted(finite.items())},
            "seconds": round(self.seconds, 3),
        }


_ACTIVE: ContextVar[Collector | None] = ContextVar("saip_bootstrap", default=None)


@contextlib.contextmanager
def collecting(config: BootstrapConfig | None = None) -> Iterator[Collector]:
    """Metrics called inside this block add their intervals to the yielded collector."""
    collector = Collector(config or BootstrapConfig())
    token = _ACTIVE.set(collector)
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)


def active() -> bool:
    """True inside :func:`collecting`: metrics build their per-sample arrays only then."""
    return _ACTIVE.get() is not None


def offer(unit: str, n: int, statistic: Statistic | Callable[[], Statistic], prefix: str = "",
          lazy: bool = False) -> None:
    """Bootstrap ``statistic`` over ``n`` units into the active collector (no-op outside one).

    ``lazy``: ``statistic`` is a factory, called only when collecting (its set-up may be costly)."""
    collector = _ACTIVE.get()
    if collector is None or n < 1:
        return
    start = time.perf_counter()
    function = statistic() if lazy else statistic  # type: ignore[call-arg]
    found = bootstrap(function, n, collector.config)  # type: ignore[arg-type]
    collector.intervals.update({prefix + key: value for key, value in found.items()})
    collector.units.setdefault(unit, n)
    collector.seconds += time.perf_counter() - start
