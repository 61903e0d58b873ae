"""Pedestrian attribute recognition: mA and instance Acc/Prec/Rec/F1 exactly as
docs/formats.md#attribute-recognition-metrics
(Rethinking-of-PAR ``get_pedestrian_metrics``).

- prediction = ``prob > 0.5`` (strict), on the evaluated attribute columns only (``eval_idx``);
- label-based: pos_recall = TP/(TP+FN+eps), neg_recall = TN/(TN+FP+eps), mA = mean of their average
  (an attribute never positive in the ground truth has pos_recall 0, as in the reference);
- instance-based: Acc = mean |P∩G|/(|P∪G|+eps), Prec = mean |P∩G|/(|P|+eps) (0 for a sample with no
  positive prediction), Rec = mean |P∩G|/(|G|+eps); F1 = 2·Prec·Rec/(Prec+Rec+eps) from the *averaged*
  Prec and Rec; eps = 1e-20.

Scores are percentages (0-100) as papers print them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.errors import DataFormatError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, load_prediction_npz, register_metric_command
from saip_bench.metrics.checks import (
    check_finite,
    check_numeric,
    check_range,
    describe_index,
    first_false,
    show,
)

EPS = 1e-20
THRESHOLD = 0.5


def _validated(
    probs: Any, labels: Any, eval_idx: Any, source: str, logits: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Checked (probs, labels) on the evaluated columns: numeric N x A arrays, finite probabilities in
    [0, 1] (or finite logits, passed through a sigmoid), 0/1 labels, integer ``eval_idx``."""
    probs = check_numeric(probs, source, "probs")
    labels = check_numeric(labels, source, "labels")
    if probs.ndim != 2 or labels.shape != probs.shape:
        raise DataFormatError(
            source,
            "probs and labels as N x A arrays of the same shape",
            f"probs {probs.shape}, labels {labels.shape}",
        )
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise DataFormatError(source, "at least one sample and one attribute", f"shape {probs.shape}")
    probs = check_finite(probs.astype(np.float64), source, "probs")
    if logits:
        from scipy.special import expit  # here: scipy costs ~0.2 s at import (CLI start-up)

        probs = expit(probs)
    else:
        check_range(probs, 0.0, 1.0, source, "probs", " (sigmoid outputs; pass --logits for raw logits)")
    binary = np.isin(labels, (0, 1))
    if not binary.all():
        index = first_false(binary)
        raise DataFormatError(
            source, "binary labels (0/1; the reader maps uncertain 2 -> 0)",
            f"values {np.unique(labels[~binary])[:5].tolist()}, first {show(labels[index])} at index "
            f"{describe_index(index)}",
        )
    if eval_idx is not None:
        idx = np.asarray(eval_idx).reshape(-1)
        if (
            not np.issubdtype(idx.dtype, np.integer)
            or idx.size == 0
            or idx.min() < 0
            or idx.max() >= probs.shape[1]
        ):
            raise DataFormatError(
                source,
                f"eval_idx as integer column indices in 0..{probs.shape[1] - 1}",
                f"{idx[:10].tolist()} (dtype {idx.dtype})",
            )
        probs, labels = probs[:, idx], labels[:, idx]
    return probs, labels.astype(np.int64)


def label_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-attribute positive/negative recall and their mean (mA per attribute)."""
    true_pos = np.sum((gt == 1) & pred, axis=0).astype(np.float64)
    true_neg = np.sum((gt == 0) & ~pred, axis=0).astype(np.float64)
    gt_pos = np.sum(gt == 1, axis=0).astype(np.float64)
    gt_neg = np.sum(gt == 0, axis=0).astype(np.float64)
    pos_recall = true_pos / (gt_pos + EPS)
    neg_recall = true_neg / (gt_neg + EPS)
    return {"pos_recall": pos_recall, "neg_recall": neg_recall, "label_ma": (pos_recall + neg_recall) / 2}


def evaluate_attributes(
    probs: Any, labels: Any, eval_idx: Any = None, source: str = "<arrays>", logits: bool = False
) -> dict[str, float]:
    """mA, Acc, Prec, Rec, F1 (percent) plus mean positive / negative recall.

    ``probs`` are probabilities in [0, 1]; with ``logits`` they are raw scores and go through a sigmoid.
    """
    probs, gt = _validated(probs, labels, eval_idx, source, logits)
    pred = probs > THRESHOLD
    per_label = label_metrics(gt, pred)
    positive = gt == 1
    intersect = np.sum(positive & pred, axis=1).astype(np.float64)
    union = np.sum(positive | pred, axis=1).astype(np.float64)
    predicted = np.sum(pred, axis=1).astype(np.float64)
    actual = np.sum(positive, axis=1).astype(np.float64)
    acc = float(np.mean(intersect / (union + EPS)))
    prec = float(np.mean(intersect / (predicted + EPS)))
    rec = float(np.mean(intersect / (actual + EPS)))
    f1 = 2 * prec * rec / (prec + rec + EPS)
    bootstrap.offer("images", gt.shape[0], lambda: bootstrap.attributes_statistic(gt, pred), lazy=True)
    return {
        "mA": 100.0 * float(np.mean(per_label["label_ma"])),
        "Acc": 100.0 * acc,
        "Prec": 100.0 * prec,
        "Rec": 100.0 * rec,
        "F1": 100.0 * f1,
        "pos_recall": 100.0 * float(np.mean(per_label["pos_recall"])),
        "neg_recall": 100.0 * float(np.mean(per_label["neg_recall"])),
        "num_samples": float(gt.shape[0]),
        "num_attributes": float(gt.shape[1]),
    }


def evaluate_attributes_file(path: str | Path, logits: bool = False) -> dict[str, float]:
    arrays = load_prediction_npz(path, ("probs", "labels"), optional=("eval_idx",))
    return evaluate_attributes(arrays["probs"], arrays["labels"], arrays.get("eval_idx"), source=str(path),
                               logits=logits)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="preds.npz with probs (N x A, sigmoid outputs), labels (N x A, 0/1), optional eval_idx "
        "(the evaluated attribute columns)",
    )
    parser.add_argument(
        "--logits",
        action="store_true",
        help="probs holds raw logits: apply a sigmoid first (default: probabilities in [0, 1], checked)",
    )


register_metric_command(
    MetricCommand(
        name="attributes",
        help="pedestrian attributes: mA and instance Acc/Prec/Rec/F1 (%%), strict > 0.5 (FORMATS §13.3)",
        add_arguments=_add_arguments,
        compute=lambda args: evaluate_attributes_file(args.input, logits=args.logits),
        main_metric="mA",
    )
)
