"""CIHP: semantic parsing (mIoU / pixel acc / mean acc, §13.6, via ``metrics.parsing``) and instance-level
part AP^r as CIHP_PGN's ``test_inst_part_ap.py`` computes it (docs/formats.md#cihp-instance-part-apr).

AP^r rules (reference reproduced): per part class 1..19, every predicted instance-part mask is a TP at
threshold t when its *maximum* IoU with any GT instance part of that class in the image is > t (no
exclusivity: two predictions may hit the same GT); predictions of all images are ranked by score
(``np.argsort(scores)[::-1]``), precision = tp / max(tp + fp, eps), recall = tp / #GT parts, and AP is
VOC's continuous AP with the precision envelope, at t = 0.1 ... 0.9. ``APr50`` is t = 0.5, ``APr_vol``
the mean over the 9 thresholds; both average over classes.

One documented difference: the reference averages all 19 classes and would give NaN for a class that
has predictions but no GT part (0 for a class with neither). Here classes without any GT part are left
out of the class mean (reported as ``num_classes_with_gt``). On the official val split every class has
GT parts, so the numbers are identical there.

File formats (as the reference reads them):
- GT: ``<id>.png`` instance-part map (0 = background) + optional ``<id>.txt`` lines
  ``<value> <class> <human>``; without the txt the class of each value is the majority ``Category_ids``
  class under it (or ``value % 20`` in the CIHP_PGN encoding value = class + 20 (human - 1)).
- predictions: ``<id>.png`` instance map where pixel value k is the k-th line of ``<id>.txt``,
  each line ``<class> <score>``. Listed instances with no pixel are dropped (the reference would
  mis-align scores and masks there).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, register_metric_command
from saip_bench.metrics.checks import read_text_lines
from saip_bench.metrics.parsing import IMAGE_ERRORS, evaluate_pairs, match_by_name

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NUM_CLASSES = 20
CIHP_CLASS_NAMES = (
    "background", "hat", "hair", "glove", "sunglasses", "upperclothes", "dress", "coat", "socks", "pants",
    "torso-skin", "scarf", "skirt", "face", "leftArm", "rightArm", "leftLeg", "rightLeg", "leftShoe",
    "rightShoe",
)


def read_map(path: str | Path) -> np.ndarray:
    """An instance/label PNG (8- or 16-bit, single channel) as an int64 array."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "I;16B"):
                raise DataFormatError(path, "a single-channel id PNG", f"mode {image.mode}")
            return np.array(image).astype(np.int64)
    except FileNotFoundError as exc:
        raise DataFormatError(path, "an id PNG", "nothing at that path") from exc
    except IMAGE_ERRORS as exc:
        raise DataFormatError(path, "a readable PNG", f"{type(exc).__name__}: {exc}") from exc


def _read_lines(path: Path, fields: int, expected: str) -> list[list[str]]:
    rows = []
    for number, line in enumerate(read_text_lines(path, expected), start=1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) < fields:
            raise DataFormatError(f"{path}:{number}", expected, repr(line[:80]))
        rows.append((number, parts))
    return rows


def gt_parts(instance_png: str | Path, category_png: str | Path | None = None) -> dict[int, int]:
    """GT instance-part value -> part class, from ``<id>.txt`` next to the PNG, else derived."""
    instance_png = Path(instance_png)
    txt = instance_png.with_suffix(".txt")
    if txt.exists():
        try:
            lines = _read_lines(txt, 2, "'<value> <class> <human>' per line")
            return {int(r[0]): int(r[1]) for _, r in lines}
        except ValueError as exc:
            raise DataFormatError(txt, "integer '<value> <class> <human>' lines", str(exc)) from exc
    instances = read_map(instance_png)
    values = [int(v) for v in np.unique(instances) if v != 0]
    if category_png is None:
        return {v: v % NUM_CLASSES for v in values}
    categories = read_map(category_png)
    if categories.shape != instances.shape:
        raise DataFormatError(category_png, f"a map of the instance map's size {instances.shape}",
                              str(categories.shape))
    out = {}
    for v in values:
        under = categories[instances == v]
        under = under[(under > 0) & (under < NUM_CLASSES)]
        if under.size:
            out[v] = int(np.bincount(under).argmax())
    return out


def pred_parts(pred_png: str | Path) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """Predicted instance map and its (value, class, score) list from ``<id>.txt`` (value = line number)."""
    pred_png = Path(pred_png)
    txt = pred_png.with_suffix(".txt")
    if not txt.exists():
        raise DataFormatError(txt, "'<class> <score>' per line, one per predicted instance", "missing file")
    rows = []
    for k, (number, parts) in enumerate(_read_lines(txt, 2, "'<class> <score>'")):
        where = f"{txt}:{number}"
        try:
            cls, score = int(parts[0]), float(parts[1])
        except ValueError as exc:
            raise DataFormatError(where, "'<class:int> <score:float>' lines", str(exc)) from exc
        if not 0 <= cls < NUM_CLASSES:
            raise DataFormatError(where, f"a part class in 0..{NUM_CLASSES - 1}", f"class {cls}")
        if not math.isfinite(score):
            raise DataFormatError(where, "a finite score", f"score {score}")
        rows.append((k + 1, cls, score))
    return read_map(pred_png), rows


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    changed = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changed + 1] - mrec[changed]) * mpre[changed + 1]))


def instance_ap(
    images: Sequence[tuple[np.ndarray, dict[int, int], np.ndarray, list[tuple[int, int, float]]]],
    thresholds: Sequence[float] = IOU_THRESHOLDS,
    num_classes: int = NUM_CLASSES,
) -> dict[str, float]:
    """AP^r from per-image (gt_map, gt value->class, pred_map, [(value, class, score)]).

    Inside ``bootstrap.collecting`` the AP^r keys also get a bootstrap interval over images, from the
    same per-prediction hits (``bootstrap.part_ap_statistic``)."""
    per_class = np.full((num_classes - 1, len(thresholds)), np.nan)
    collect = bootstrap.active()
    parts: list[bootstrap.PartClass] = []  # only filled for intervals
    for cls in range(1, num_classes):
        num_gt = 0
        gt_per_image = np.zeros(len(images))
        owners: list[int] = []  # per prediction: its image's index
        scores: list[float] = []
        hits: list[np.ndarray] = []  # per prediction: max IoU > t for each t
        for index, (gt_map, gt_classes, pred_map, preds) in enumerate(images):
            gt_masks = [gt_map == v for v in sorted(gt_classes) if gt_classes[v] == cls]
            gt_masks = [m for m in gt_masks if m.any()]
            num_gt += len(gt_masks)
            gt_per_image[index] = len(gt_masks)
            pred_items = [(pred_map == v, s) for v, c, s in preds if c == cls]
            pred_items = [(m, s) for m, s in pred_items if m.any()]
            if not pred_items:
                continue
            scores.extend(s for _, s in pred_items)
            owners.extend(index for _ in pred_items)
            if not gt_masks:
                hits.extend(np.zeros(len(thresholds), dtype=bool) for _ in pred_items)
                continue
            gt_stack = np.stack(gt_masks).reshape(len(gt_masks), -1)
            gt_area = gt_stack.sum(1)
            for mask, _ in pred_items:
                flat = mask.reshape(-1)
                inter = (gt_stack & flat).sum(1)
                iou = inter / (gt_area + flat.sum() - inter)
                hits.append(iou.max() > np.asarray(thresholds))
        if num_gt == 0:
            continue
        order = np.argsort(scores)[::-1]
        hit_matrix = np.asarray(hits, dtype=np.float64).reshape(len(scores), len(thresholds))[order]
        if collect:
            parts.append(bootstrap.PartClass(np.asarray(owners, dtype=np.int64)[order], hit_matrix,
                                             gt_per_image))
        for k in range(len(thresholds)):
            tp = np.cumsum(hit_matrix[:, k])
            fp = np.cumsum(1 - hit_matrix[:, k])
            recall = tp / float(num_gt)
            precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            per_class[cls - 1, k] = _voc_ap(recall, precision)
    if collect and parts:
        bootstrap.offer("images", len(images), bootstrap.part_ap_statistic(parts, tuple(thresholds)))
    with_gt = ~np.isnan(per_class[:, 0])
    out: dict[str, float] = {"num_classes_with_gt": float(with_gt.sum())}
    if not with_gt.any():
        out.update({"APr50": float("nan"), "APr_vol": float("nan")})
        return out
    mean_per_threshold = per_class[with_gt].mean(axis=0)
    for t, value in zip(thresholds, mean_per_threshold, strict=True):
        out[f"APr@{t:.1f}"] = float(value)
    at_half = list(thresholds).index(0.5) if 0.5 in thresholds else None
    out["APr50"] = float(mean_per_threshold[at_half]) if at_half is not None else float("nan")
    out["APr_vol"] = float(mean_per_threshold.mean())
    return out


def evaluate_instance_dirs(gt_dir: str | Path, pred_dir: str | Path,
                           category_dir: str | Path | None = None) -> dict[str, float]:
    """AP^r over every prediction ``<id>.txt`` in ``pred_dir`` (the reference's image list)."""
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder in (gt_dir, pred_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: not a directory")
    ids = sorted(p.stem for p in pred_dir.glob("*.txt"))
    if not ids:
        raise UserError(f"{pred_dir}: no '<id>.txt' instance predictions")
    images = []
    for image_id in ids:
        gt_png = gt_dir / f"{image_id}.png"
        category_png = Path(category_dir) / f"{image_id}.png" if category_dir else None
        gt_map = read_map(gt_png)
        pred_map, preds = pred_parts(pred_dir / f"{image_id}.png")
        if pred_map.shape != gt_map.shape:
            raise DataFormatError(pred_dir / f"{image_id}.png",
                                  f"an instance map of the GT's size {gt_map.shape}", str(pred_map.shape))
        images.append((gt_map, gt_parts(gt_png, category_png), pred_map, preds))
    scores = instance_ap(images)
    if scores["num_classes_with_gt"] == 0:
        raise DataFormatError(gt_dir, "at least one GT instance part in the scored images (AP^r is "
                              "undefined without one)", f"none in {len(images)} images")
    scores["num_images"] = float(len(images))
    return scores


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt-categories", help="Category_ids/ (semantic GT, raw class ids)")
    parser.add_argument("--pred-semantic", help="predicted semantic label PNGs named like the GT")
    parser.add_argument("--gt-instances", help="Instance_ids/ or CIHP_PGN Instance_part_val/ (PNG [+ txt])")
    parser.add_argument("--pred-instances", help="<id>.png instance maps + <id>.txt '<class> <score>'")


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    if args.pred_semantic:
        if not args.gt_categories:
            raise UserError("--pred-semantic needs --gt-categories")
        pairs = match_by_name(args.gt_categories, args.pred_semantic)
        scores.update(evaluate_pairs(pairs, NUM_CLASSES, class_names=CIHP_CLASS_NAMES))
    if args.pred_instances:
        if not args.gt_instances:
            raise UserError("--pred-instances needs --gt-instances")
        scores.update(
            evaluate_instance_dirs(args.gt_instances, args.pred_instances, args.gt_categories))
    if not scores:
        raise UserError("give --pred-semantic (+ --gt-categories) and/or --pred-instances (+ --gt-instances)")
    return scores


register_metric_command(MetricCommand(
    name="cihp",
    help="CIHP semantic mIoU / pixel acc / mean acc and instance-part AP^r (CIHP_PGN rules)",
    add_arguments=_add_arguments,
    compute=_compute,
    main_metric="mIoU",
))
