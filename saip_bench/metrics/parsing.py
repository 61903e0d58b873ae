"""Human parsing metrics (LIP, CIHP semantic): mIoU, pixel accuracy, mean class accuracy
(docs/formats.md#parsing-miou).

Why one confusion matrix: the official protocol (SCHP ``miou.py``) accumulates pixels over the whole split
before dividing, so large images weigh more than small ones; per-image means would give other numbers.
IoU_c = TP_c / max(1, GT_c + Pred_c - TP_c), and mIoU averages *all* classes, background included, so a
class absent from both GT and prediction counts as 0. Values are fractions in [0, 1].
"""

from __future__ import annotations

import argparse
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, register_metric_command
from saip_bench.metrics.checks import describe_index, first_false

IGNORE_INDEX = 255
MAX_CLASSES = 256


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = GT class, columns = predicted class.

    Pixels whose GT is ``ignore_index`` are dropped; any other GT or predicted value outside
    ``[0, num_classes)`` is an error (a silently dropped pixel would inflate every score).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"GT shape {gt.shape} != prediction shape {pred.shape}")
    keep = gt != ignore_index
    gt_kept = gt[keep].astype(np.int64)
    pred_kept = pred[keep].astype(np.int64)
    if gt_kept.size and (gt_kept.min() < 0 or gt_kept.max() >= num_classes):
        raise ValueError(f"GT holds values outside [0, {num_classes}) other than {ignore_index}: "
                         f"{_first_outside(gt, keep, num_classes)}")
    if pred_kept.size and (pred_kept.min() < 0 or pred_kept.max() >= num_classes):
        raise ValueError(f"prediction holds values outside [0, {num_classes}): "
                         f"{_first_outside(pred, keep, num_classes)}")
    counts = np.bincount(gt_kept * num_classes + pred_kept, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _first_outside(labels: np.ndarray, keep: np.ndarray, num_classes: int) -> str:
    """``42 at pixel (3, 4)``: the first counted value outside ``[0, num_classes)``, as (row, column)."""
    bad = keep & ((labels < 0) | (labels >= num_classes))
    index = first_false(~bad)
    return f"{labels[index].item()} at pixel {describe_index(index)}"


def check_num_classes(num_classes: int, option: str = "num_classes") -> None:
    """Label PNGs hold 8-bit class ids: 1..256 classes (a larger count is a typo, and its confusion
    matrix would not fit in memory)."""
    if not isinstance(num_classes, (int, np.integer)) or not 1 <= num_classes <= MAX_CLASSES:
        raise UserError(f"{option} must be in 1..{MAX_CLASSES} (label PNGs hold 8-bit class ids), "
                        f"got {num_classes!r}")


def scores_from_confusion(
    confusion: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """mIoU, pixel_acc, mean_acc and per-class ``IoU/<name>`` from one accumulated confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    true_positive = np.diag(confusion)
    gt_count = confusion.sum(axis=1)
    pred_count = confusion.sum(axis=0)
    iou = true_positive / np.maximum(1.0, gt_count + pred_count - true_positive)
    scores: dict[str, float] = {
        "mIoU": float(iou.mean()),
        "pixel_acc": float(true_positive.sum() / max(1.0, gt_count.sum())),
        "mean_acc": float((true_positive / np.maximum(1.0, gt_count)).mean()),
    }
    for name, value in zip(names, iou, strict=True):
        scores[f"IoU/{name}"] = float(value)
    return scores


# What Pillow raises on a file it cannot decode (truncated, corrupt chunks, a decompression bomb).
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, zlib.error,
                struct.error, Image.DecompressionBombError)


def read_label_png(path: str | Path) -> np.ndarray:
    """A single-channel label PNG (mode L or P: raw class ids) as a 2-D uint8 array."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                raise DataFormatError(path, "a single-channel label PNG (mode L or P, raw class ids)",
                                      f"mode {image.mode}")
            return np.array(image)
    except FileNotFoundError as exc:
        raise DataFormatError(path, "a label PNG", "nothing at that path") from exc
    except IMAGE_ERRORS as exc:
        raise DataFormatError(path, "a readable label PNG", f"{type(exc).__name__}: {exc}") from exc


def evaluate_pairs(
    pairs: Iterable[tuple[str | Path, str | Path]],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Score ``(gt_png, pred_png)`` pairs with one confusion matrix over all of them."""
    check_num_classes(num_classes)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    per_image: list[np.ndarray] | None = [] if bootstrap.active() else None  # kept only for intervals
    count = 0
    for gt_path, pred_path in pairs:
        gt = read_label_png(gt_path)
        pred = read_label_png(pred_path)
        if gt.shape != pred.shape:
            raise DataFormatError(pred_path, f"a label map of the GT's size {gt.shape[1]}x{gt.shape[0]}",
                                  f"{pred.shape[1]}x{pred.shape[0]}")
        try:
            image_confusion = confusion_matrix(gt, pred, num_classes, ignore_index)
        except ValueError as exc:
            raise DataFormatError(f"{gt_path} / {pred_path}", f"class ids in [0, {num_classes})",
                                  str(exc)) from exc
        confusion += image_confusion
        if per_image is not None:
            per_image.append(image_confusion)
        count += 1
    if count == 0:
        raise UserError("no label maps to score")
    scores = scores_from_confusion(confusion, class_names)
    scores["num_images"] = float(count)
    if per_image is not None:
        bootstrap.offer("images", count, bootstrap.confusion_statistic(np.stack(per_image)))
    return scores


def match_by_name(gt_dir: str | Path, pred_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair every GT ``*.png`` with the same-named prediction; a missing prediction is an error."""
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder in (gt_dir, pred_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: not a directory")
    gt_files = sorted(gt_dir.glob("*.png"))
    if not gt_files:
        raise UserError(f"{gt_dir}: no *.png label maps")
    missing = [p.name for p in gt_files if not (pred_dir / p.name).exists()]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(f"{pred_dir}: no prediction for {len(missing)} of {len(gt_files)} GT maps ({shown})")
    return [(p, pred_dir / p.name) for p in gt_files]


def evaluate_dirs(
    gt_dir: str | Path,
    pred_dir: str | Path,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    return evaluate_pairs(match_by_name(gt_dir, pred_dir), num_classes, ignore_index, class_names)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt-dir", required=True, type=Path, help="GT label PNGs (raw class ids)")
    parser.add_argument("--pred-dir", required=True, type=Path, help="predicted label PNGs, same file names")
    parser.add_argument("--num-classes", required=True, type=int, help="e.g. 20 for LIP and CIHP")
    parser.add_argument("--ignore-index", type=int, default=IGNORE_INDEX, help="GT value to skip (255)")
    parser.add_argument("--class-names", default=None,
                        help="comma-separated names for the per-class IoU keys (default: indices)")


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    check_num_classes(args.num_classes, "--num-classes")
    names = args.class_names.split(",") if args.class_names else None
    if names is not None and len(names) != args.num_classes:
        raise UserError(f"--class-names has {len(names)} names for --num-classes {args.num_classes}")
    return evaluate_dirs(args.gt_dir, args.pred_dir, args.num_classes, args.ignore_index, names)


register_metric_command(
    MetricCommand(
        name="parsing",
        help="human parsing mIoU / pixel acc / mean class acc over label PNGs matched by file name",
        add_arguments=_add_arguments,
        compute=_compute,
        main_metric="mIoU",
    )
)
