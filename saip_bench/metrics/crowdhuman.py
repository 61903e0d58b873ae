"""CrowdHuman full-body AP, MR^-2 and JI exactly as CrowdDet's evaluator computes them (FORMATS.md §13.8).

Why re-implemented rather than imported: the reference toolkit is scripts with hard-coded paths and
multiprocessing; the rules below are reproduced one by one (including the 1e-6 epsilons in the
overlap denominators and in the JI ratio) so numbers agree with it to floating-point noise:

- GT = ``fbox`` as x1y1x2y2; tag 1 for ``person``, 0 for ``background``, otherwise -1 (ignore);
  ``extra.ignore != 0`` forces -1. GT *and* detections are clipped to the image
  (x1 to [0, w-1], x2 to [0, w], same for y), which needs ``height``/``width`` in each result record.
- AP/MR: per image, detections by decreasing score, GT with non-ignored first; each detection takes
  the unmatched non-ignored GT with the highest IoU > 0.5 (TP), else is swallowed if its IoA on the
  first ignore region is > 0.5, else is an FP. All images' TP/FP are merged by score (stable).
  AP = trapezoids between consecutive points of the raw PR curve; MR^-2 = geometric mean of the miss
  rates at the first list index whose FPPI >= each of 9 reference points (the last index if none).
- JI: for tau in {0.0, ..., 0.9} keep score > tau, maximum-weight bipartite matching on IoU > 0.5
  (``scipy.optimize.linear_sum_assignment``), unmatched dets/GT with IoA > 0.5 on an ignore region
  leave n/m; JI_img = k / (m + n - k + 1e-6); mean over images with m + n > 0; JI = max over tau.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics.base import MetricCommand, register_metric_command

EPS = 1e-6
MATCH_IOU = 0.5
MR_REFERENCE = (0.0100, 0.0178, 0.03160, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.000)
JI_SCORE_THRESHOLDS = tuple(1e-1 * i for i in range(10))
PERSON_CLASSES = ("background", "person")


@dataclass
class ImageEval:
    """One image: GT as (G, 5) [x1, y1, x2, y2, tag]; detections as (D, 5) [x1, y1, x2, y2, score]."""

    image_id: str
    gt: np.ndarray
    dt: np.ndarray
    height: int
    width: int


def read_odgt(path: str | Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line; a broken line names the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "an .odgt file (one JSON object per line)", "nothing at that path")
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{number}", "one JSON object per line", str(exc)) from exc
            if not isinstance(record, dict) or "ID" not in record:
                raise DataFormatError(f"{path}:{number}", 'a JSON object with "ID"', repr(line[:80]))
            records.append(record)
    return records


def gt_boxes_from_record(record: dict[str, Any], source: str = "") -> np.ndarray:
    """(G, 5) full-body GT in x1y1x2y2 + tag (1 person, 0 background, -1 ignore) as CrowdDet loads it."""
    rows = []
    for box in record.get("gtboxes", []):
        try:
            tag = PERSON_CLASSES.index(box["tag"]) if box["tag"] in PERSON_CLASSES else -1
            if box.get("extra", {}).get("ignore", 0) != 0:
                tag = -1
            x, y, w, h = (float(v) for v in box["fbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(source or record["ID"], 'gtboxes with "tag" and "fbox" [x, y, w, h]',
                                  repr(box)[:120]) from exc
        rows.append([x, y, x + w, y + h, tag])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def dt_boxes_from_record(record: dict[str, Any], source: str = "") -> np.ndarray:
    """(D, 5) detections in x1y1x2y2 + score."""
    rows = []
    for box in record.get("dtboxes", []):
        try:
            x, y, w, h = (float(v) for v in box["box"])
            rows.append([x, y, x + w, y + h, float(box["score"])])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(source or record["ID"], 'dtboxes with "box" [x, y, w, h] and "score"',
                                  repr(box)[:120]) from exc
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """CrowdDet's ``clip_boundary``: x1/y1 into [0, size-1], x2/y2 into [0, size]."""
    boxes = boxes.copy()
    boxes[:, 0] = np.minimum(np.maximum(boxes[:, 0], 0), width - 1)
    boxes[:, 1] = np.minimum(np.maximum(boxes[:, 1], 0), height - 1)
    boxes[:, 2] = np.maximum(np.minimum(boxes[:, 2], width), 0)
    boxes[:, 3] = np.maximum(np.minimum(boxes[:, 3], height), 0)
    return boxes


def _overlaps(dt: np.ndarray, gt: np.ndarray, mode: str) -> np.ndarray:
    """(D, G) IoU ("iou"), IoA over the detection ("ioa"), or JI's IoA with a clamped area ("ioa_clamped")."""
    iw = np.minimum(dt[:, None, 2], gt[None, :, 2]) - np.maximum(dt[:, None, 0], gt[None, :, 0])
    ih = np.minimum(dt[:, None, 3], gt[None, :, 3]) - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = np.maximum(0, iw) * np.maximum(0, ih)
    if mode == "ioa_clamped":
        dt_area = np.maximum(dt[:, 2] - dt[:, 0], 0) * np.maximum(dt[:, 3] - dt[:, 1], 0)
        return inter / (dt_area[:, None] + EPS)
    dt_area = (dt[:, 2] - dt[:, 0]) * (dt[:, 3] - dt[:, 1])
    if mode == "ioa":
        return inter / (dt_area[:, None] + EPS)
    gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    return inter / (dt_area[:, None] + gt_area[None, :] - inter + EPS)


def match_caltech(image: ImageEval, threshold: float = MATCH_IOU) -> list[tuple[float, int]]:
    """Per-image (score, 1 = TP / 0 = FP) list; detections swallowed by an ignore region are left out."""
    if len(image.dt) == 0:
        return []
    dt = image.dt[np.argsort(-image.dt[:, 4], kind="stable")]
    gt = image.gt[np.argsort(-image.gt[:, 4], kind="stable")]
    iou = _overlaps(dt, gt, "iou")
    ioa = _overlaps(dt, gt, "ioa")
    gt_matched = np.zeros(len(gt), dtype=bool)
    results: list[tuple[float, int]] = []
    for i in range(len(dt)):
        best, best_overlap = -1, threshold
        for j in range(len(gt)):
            if gt_matched[j]:
                continue
            if gt[j, 4] > 0:
                if iou[i, j] > best_overlap:
                    best, best_overlap = j, iou[i, j]
            else:
                if best >= 0:
                    break
                if ioa[i, j] > threshold:
                    best, best_overlap = j, ioa[i, j]
        if best >= 0:
            if gt[best, 4] > 0:
                gt_matched[best] = True
                results.append((float(dt[i, 4]), 1))
            # else: swallowed by an ignore region (neither TP nor FP)
        else:
            results.append((float(dt[i, 4]), 0))
    return results


def ap_mr(images: Sequence[ImageEval]) -> dict[str, float]:
    """AP (trapezoid, no envelope) and MR^-2 over the merged, score-sorted TP/FP list."""
    num_gt = sum(len(im.gt) for im in images)
    num_ignore = sum(int((im.gt[:, 4] == -1).sum()) for im in images)
    positives = num_gt - num_ignore
    merged: list[tuple[float, int]] = []
    for image in images:
        merged.extend(match_caltech(image))
    scores = np.asarray([s for s, _ in merged], dtype=np.float64)
    flags = np.asarray([f for _, f in merged], dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    flags = flags[order]
    tp = np.cumsum(flags == 1).astype(np.float64)
    fp = np.cumsum(flags == 0).astype(np.float64)
    if len(flags) == 0 or positives <= 0:
        return {"AP": 0.0 if positives > 0 else float("nan"), "MR": float("nan"),
                "num_gt": float(positives), "num_images": float(len(images))}
    recall = tp / positives
    precision = tp / (tp + fp)
    ap = float(np.sum((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) / 2))
    fppi = fp / len(images)
    miss_rate = 1.0 - recall
    picks = []
    for reference in MR_REFERENCE:
        above = np.nonzero(fppi >= reference)[0]
        picks.append(miss_rate[above[0]] if len(above) else miss_rate[-1])
    with np.errstate(divide="ignore"):
        mr = float(np.exp(np.log(np.asarray(picks)).mean()))
    return {"AP": ap, "MR": mr, "num_gt": float(positives), "num_images": float(len(images))}


def _ignored_count(boxes: np.ndarray, ignore_regions: np.ndarray, threshold: float) -> int:
    if ignore_regions.size == 0 or len(boxes) == 0:
        return 0
    return int((_overlaps(boxes, ignore_regions, "ioa_clamped").max(axis=1) > threshold).sum())


def max_weight_matching(
    dt: np.ndarray, gt: np.ndarray, threshold: float = MATCH_IOU
) -> list[tuple[int, int]]:
    """Maximum-weight bipartite matching on edges with IoU > threshold (weights = IoU)."""
    if len(dt) == 0 or len(gt) == 0:
        return []
    iou = _overlaps(dt, gt, "iou")
    weights = np.where(iou > threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if weights[r, c] > 0]


def jaccard_index(images: Sequence[ImageEval], threshold: float = MATCH_IOU) -> dict[str, float]:
    """JI per score threshold (``JI@0.0`` ... ``JI@0.9``) and ``JI`` = their maximum."""
    out: dict[str, float] = {}
    for tau in JI_SCORE_THRESHOLDS:
        ratios, counted = [], 0
        for image in images:
            dt = image.dt[image.dt[:, 4] > tau][:, :4]
            keep_gt = image.gt[:, 4] != -1
            gt, ignore_regions = image.gt[keep_gt, :4], image.gt[~keep_gt, :4]
            matches = max_weight_matching(dt, gt, threshold)
            dt_unmatched = np.setdiff1d(np.arange(len(dt)), [i for i, _ in matches])
            gt_unmatched = np.setdiff1d(np.arange(len(gt)), [j for _, j in matches])
            k = len(matches)
            n = len(dt) - _ignored_count(dt[dt_unmatched], ignore_regions, threshold)
            m = len(gt) - _ignored_count(gt[gt_unmatched], ignore_regions, threshold)
            ratios.append(k / (m + n - k + EPS))
            counted += int(m != 0 or n != 0)
        out[f"JI@{tau:.1f}"] = float(np.sum(ratios) / counted) if counted else float("nan")
    out["JI"] = float(max(out[f"JI@{tau:.1f}"] for tau in JI_SCORE_THRESHOLDS))
    return out


def build_images(gt_records: Iterable[dict[str, Any]], pred_records: Iterable[dict[str, Any]],
                 gt_source: str = "GT", pred_source: str = "predictions") -> list[ImageEval]:
    """Join GT and result records by ``ID`` (GT order); clip both to the size in the result record."""
    predictions: dict[str, dict[str, Any]] = {}
    for record in pred_records:
        predictions[str(record["ID"])] = record
    images = []
    gt_ids = set()
    for record in gt_records:
        image_id = str(record["ID"])
        gt_ids.add(image_id)
        if image_id not in predictions:
            raise DataFormatError(pred_source, f"a result record for every GT image (ID {image_id!r})",
                                  "no record with that ID")
        pred = predictions[image_id]
        try:
            height, width = int(pred["height"]), int(pred["width"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(pred_source, f'"height" and "width" in the record of ID {image_id!r}',
                                  "missing or not integers") from exc
        gt = gt_boxes_from_record(record, gt_source)
        dt = dt_boxes_from_record(pred, pred_source)
        gt[:, :4] = clip_boxes(gt[:, :4], height, width)
        dt[:, :4] = clip_boxes(dt[:, :4], height, width)
        images.append(ImageEval(image_id, gt, dt, height, width))
    extra = set(predictions) - gt_ids
    if extra:
        raise DataFormatError(pred_source, "only IDs present in the GT",
                              f"unknown IDs e.g. {sorted(extra)[:3]}")
    return images


def evaluate(gt_records: Iterable[dict[str, Any]], pred_records: Iterable[dict[str, Any]],
             gt_source: str = "GT", pred_source: str = "predictions") -> dict[str, float]:
    """All CrowdHuman metrics (fractions; MR lower is better) from parsed odgt records."""
    images = build_images(gt_records, pred_records, gt_source, pred_source)
    if not images:
        raise UserError(f"{gt_source}: no images to score")
    scores = ap_mr(images)
    scores.update(jaccard_index(images))
    return scores


def evaluate_files(gt_path: str | Path, pred_path: str | Path) -> dict[str, float]:
    return evaluate(read_odgt(gt_path), read_odgt(pred_path), str(gt_path), str(pred_path))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, help="annotation_val.odgt")
    parser.add_argument("--pred", required=True,
                        help="results .odgt: {ID, height, width, dtboxes: [{box: [x,y,w,h], score, tag}]}")


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    return evaluate_files(args.gt, args.pred)


register_metric_command(MetricCommand(
    name="crowdhuman",
    help="CrowdHuman full-body AP / MR^-2 / JI (CrowdDet rules)",
    add_arguments=_add_arguments,
    compute=_compute,
    main_metric="AP",
))
