"""CrowdHuman full-body AP, MR^-2 and JI exactly as CrowdDet's evaluator computes them
(docs/formats.md#crowdhuman-detection-metrics).

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
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, register_metric_command
from saip_bench.metrics.checks import (
    finite_number,
    first_false,
    is_number,
    number_list,
    parse_json_int,
    read_text_lines,
    show,
)

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


class OdgtRecords(list):
    """The records of an .odgt file, with each record's line number (for error messages)."""

    def __init__(self, records: list[dict[str, Any]], lines: list[int]) -> None:
        super().__init__(records)
        self.lines = lines


def read_odgt(path: str | Path) -> OdgtRecords:
    """One JSON object per non-empty line; a broken line names the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "an .odgt file (one JSON object per line)", "nothing at that path")
    records, numbers = [], []
    for number, line in enumerate(read_text_lines(path, "an .odgt text file (one JSON object per line)"),
                                  start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_int=parse_json_int)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{number}", "one JSON object per line", str(exc)) from exc
        except RecursionError as exc:
            raise DataFormatError(f"{path}:{number}", "one JSON object per line", "JSON nested too deeply") \
                from exc
        if not isinstance(record, dict) or "ID" not in record:
            raise DataFormatError(f"{path}:{number}", 'a JSON object with "ID"', repr(line[:80]))
        records.append(record)
        numbers.append(number)
    return OdgtRecords(records, numbers)


def _where(records: Any, index: int, source: str) -> str:
    """``file:line`` when the records came from ``read_odgt``, else the source name."""
    lines = getattr(records, "lines", None)
    return f"{source}:{lines[index]}" if lines is not None and index < len(lines) else source


def _box_list(record: dict[str, Any], key: str, source: str) -> list[Any]:
    boxes = record.get(key, [])
    if not isinstance(boxes, list):
        raise DataFormatError(source, f'"{key}" as a list',
                              f"{show(boxes)} in the record of ID {show(record.get('ID'))}")
    return boxes


def _check_rows(
    rows: np.ndarray, source: str, key: str, fields: tuple[tuple[str, Any], ...], record: dict[str, Any]
) -> None:
    """Every value of (N, k) box rows finite; names the box, the field and the coordinate index."""
    finite = np.isfinite(rows)
    if finite.all():
        return
    row, column = first_false(finite)
    field, position = fields[column]
    raise DataFormatError(source, f"finite numbers in every {key} {field}",
                          f"{show(rows[row, column])} at index {position} of {field} in {key}[{row}] "
                          f"(ID {show(record.get('ID'))})")


def gt_boxes_from_record(record: dict[str, Any], source: str = "") -> np.ndarray:
    """(G, 5) full-body GT in x1y1x2y2 + tag (1 person, 0 background, -1 ignore) as CrowdDet loads it."""
    source = source or str(record.get("ID"))
    rows = []
    for index, box in enumerate(_box_list(record, "gtboxes", source)):
        where = f"gtboxes[{index}] (ID {show(record.get('ID'))})"
        if not isinstance(box, dict) or "tag" not in box or "fbox" not in box:
            raise DataFormatError(source, 'gtboxes with "tag" and "fbox" [x, y, w, h]',
                                  f"{show(box)} in {where}")
        extra = box.get("extra", {})
        if not isinstance(extra, dict):
            raise DataFormatError(source, '"extra" as a JSON object', f"{show(extra)} in {where}")
        known = isinstance(box["tag"], str) and box["tag"] in PERSON_CLASSES
        tag = PERSON_CLASSES.index(box["tag"]) if known else -1
        if extra.get("ignore", 0) != 0:
            tag = -1
        x, y, w, h = number_list(box["fbox"], 4, source, "fbox", where)
        rows.append([x, y, x + w, y + h, tag])
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    _check_rows(boxes, source, "gtboxes", (("fbox", 0), ("fbox", 1), ("fbox", "2 (x + w)"),
                                           ("fbox", "3 (y + h)"), ("tag", 0)), record)
    return boxes


def dt_boxes_from_record(record: dict[str, Any], source: str = "") -> np.ndarray:
    """(D, 5) detections in x1y1x2y2 + score; boxes and scores must be finite numbers."""
    source = source or str(record.get("ID"))
    rows = []
    for index, box in enumerate(_box_list(record, "dtboxes", source)):
        where = f"dtboxes[{index}] (ID {show(record.get('ID'))})"
        if not isinstance(box, dict) or "box" not in box or "score" not in box:
            raise DataFormatError(source, 'dtboxes with "box" [x, y, w, h] and "score"',
                                  f"{show(box)} in {where}")
        values = box["box"]
        if not isinstance(values, list) or len(values) != 4 or not all(map(is_number, values)):
            number_list(values, 4, source, "box", where)  # raises, naming the element
        if not is_number(box["score"]):
            finite_number(box["score"], source, "score", where)  # raises
        x, y, w, h = (float(v) for v in values)
        rows.append([x, y, x + w, y + h, float(box["score"])])
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    _check_rows(boxes, source, "dtboxes", (("box", 0), ("box", 1), ("box", "2 (x + w)"),
                                           ("box", "3 (y + h)"), ("score", 0)), record)
    return boxes


def _image_size(record: dict[str, Any], source: str, image_id: str) -> tuple[int, int]:
    sizes = []
    for key in ("height", "width"):
        value = record.get(key)
        if not is_number(value) or not math.isfinite(float(value)) or float(value) != int(value) or value < 1:
            raise DataFormatError(source, f'"height" and "width" as positive integers in the record of ID '
                                  f"{image_id!r}", f"{key} {show(value)}")
        sizes.append(int(value))
    return sizes[0], sizes[1]


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
    owner: list[int] = []  # image index of each merged detection (for the bootstrap)
    for index, image in enumerate(images):
        matched = match_caltech(image)
        merged.extend(matched)
        owner.extend([index] * len(matched))
    scores = np.asarray([s for s, _ in merged], dtype=np.float64)
    flags = np.asarray([f for _, f in merged], dtype=np.int64)
    if bootstrap.active():
        per_image = np.array([len(im.gt) - int((im.gt[:, 4] == -1).sum()) for im in images], dtype=np.float64)
        bootstrap.offer("images", len(images), bootstrap.caltech_statistic(
            np.asarray(owner, dtype=np.int64), scores, flags, per_image, MR_REFERENCE))
    order = np.argsort(-scores, kind="stable")
    flags = flags[order]
    tp = np.cumsum(flags == 1).astype(np.float64)
    fp = np.cumsum(flags == 0).astype(np.float64)
    if len(flags) == 0 or positives <= 0:
        # No GT person: both undefined (NaN; ``evaluate`` refuses such a GT). No detection left (none, or
        # all swallowed by ignore regions): every person is missed at every FPPI, so AP 0 and MR 1 (the
        # reference has no value here: it indexes an empty list).
        return {"AP": 0.0 if positives > 0 else float("nan"), "MR": 1.0 if positives > 0 else float("nan"),
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
    from scipy.optimize import linear_sum_assignment  # here: scipy costs ~0.2 s at import (CLI start-up)

    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if weights[r, c] > 0]


def jaccard_index(images: Sequence[ImageEval], threshold: float = MATCH_IOU) -> dict[str, float]:
    """JI per score threshold (``JI@0.0`` ... ``JI@0.9``) and ``JI`` = their maximum."""
    out: dict[str, float] = {}
    all_ratios, all_counted = [], []  # (tau, image): for the bootstrap
    for tau in JI_SCORE_THRESHOLDS:
        ratios, counted, counted_flags = [], 0, []
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
            counted_flags.append(float(m != 0 or n != 0))
        out[f"JI@{tau:.1f}"] = float(np.sum(ratios) / counted) if counted else float("nan")
        all_ratios.append(ratios)
        all_counted.append(counted_flags)
    out["JI"] = float(max(out[f"JI@{tau:.1f}"] for tau in JI_SCORE_THRESHOLDS))
    if images and bootstrap.active():
        bootstrap.offer("images", len(images), bootstrap.jaccard_statistic(np.asarray(all_ratios).T,
                                                                           np.asarray(all_counted).T))
    return out


def build_images(gt_records: Iterable[dict[str, Any]], pred_records: Iterable[dict[str, Any]],
                 gt_source: str = "GT", pred_source: str = "predictions") -> list[ImageEval]:
    """Join GT and result records by ``ID`` (GT order); clip both to the size in the result record.

    Checked first: one record per ID on each side, every result ID in the GT, finite boxes and scores,
    positive integer sizes; errors name ``file:line`` when the records come from ``read_odgt``.
    """
    gt_records = gt_records if isinstance(gt_records, list) else list(gt_records)
    pred_records = pred_records if isinstance(pred_records, list) else list(pred_records)
    predictions: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, record in enumerate(pred_records):
        where = _where(pred_records, index, pred_source)
        if not isinstance(record, dict) or "ID" not in record:
            raise DataFormatError(where, 'a JSON object with "ID" per result record', show(record))
        image_id = str(record["ID"])
        if image_id in predictions:
            first = _where(pred_records, predictions[image_id][0], pred_source)
            raise DataFormatError(where, "one result record per ID",
                                  f"ID {image_id!r} again (first at {first})")
        predictions[image_id] = (index, record)
    images = []
    gt_ids: dict[str, int] = {}
    for gt_index, record in enumerate(gt_records):
        gt_where = _where(gt_records, gt_index, gt_source)
        if not isinstance(record, dict) or "ID" not in record:
            raise DataFormatError(gt_where, 'a JSON object with "ID" per GT record', show(record))
        image_id = str(record["ID"])
        if image_id in gt_ids:
            raise DataFormatError(gt_where, "one GT record per ID", f"ID {image_id!r} again")
        gt_ids[image_id] = gt_index
        if image_id not in predictions:
            raise DataFormatError(pred_source, f"a result record for every GT image (ID {image_id!r})",
                                  "no record with that ID")
        index, pred = predictions[image_id]
        where = _where(pred_records, index, pred_source)
        height, width = _image_size(pred, where, image_id)
        gt = gt_boxes_from_record(record, gt_where)
        dt = dt_boxes_from_record(pred, where)
        gt[:, :4] = clip_boxes(gt[:, :4], height, width)
        dt[:, :4] = clip_boxes(dt[:, :4], height, width)
        images.append(ImageEval(image_id, gt, dt, height, width))
    extra = [(index, image_id) for image_id, (index, _) in predictions.items() if image_id not in gt_ids]
    if extra:
        index, image_id = min(extra)
        raise DataFormatError(_where(pred_records, index, pred_source), "only IDs present in the GT",
                              f"unknown ID {image_id!r} ({len(extra)} unknown)")
    return images


def evaluate(gt_records: Iterable[dict[str, Any]], pred_records: Iterable[dict[str, Any]],
             gt_source: str = "GT", pred_source: str = "predictions") -> dict[str, float]:
    """All CrowdHuman metrics (fractions; MR lower is better) from parsed odgt records."""
    images = build_images(gt_records, pred_records, gt_source, pred_source)
    if not images:
        raise UserError(f"{gt_source}: no images to score")
    if not any((image.gt[:, 4] != -1).any() for image in images):
        raise DataFormatError(gt_source, "at least one GT box that is not ignored (AP and MR^-2 are "
                              "undefined without one)", f"none in {len(images)} images")
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
