"""COCO keypoint AP (pycocotools) and COCO-WholeBody AP (xtcocotools), on the official GT JSON.

Why the reference libraries and not our own OKS: the protocol's details (ignored GTs absorbing detections,
maxDets 20, 101-point interpolation, area ranges, and for whole-body the per-part ignore rules and the
body area used for every part) are what make numbers comparable with published ones
(docs/formats.md#coco-keypoint-ap, #coco-wholebody-ap).
Scores are fractions in [0, 1] (pycocotools' ``stats``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, register_metric_command
from saip_bench.metrics.checks import (
    entry,
    finite_number,
    first_false,
    integer_id,
    load_json,
    number_list,
    show,
)

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

COCO_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10.0

# COCO-WholeBody: parts in the order of the 133-point array, with their result/GT keys.
WHOLEBODY_PARTS: tuple[tuple[str, str, int], ...] = (
    ("body", "keypoints", 17),
    ("foot", "foot_kpts", 6),
    ("face", "face_kpts", 68),
    ("lefthand", "lefthand_kpts", 21),
    ("righthand", "righthand_kpts", 21),
)
FOOT_SIGMAS = [0.068, 0.066, 0.066, 0.092, 0.094, 0.094]
FACE_SIGMAS = [
    0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020, 0.023, 0.029, 0.032, 0.037, 0.038, 0.043,
    0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011, 0.011, 0.013, 0.015, 0.009, 0.007, 0.007,
    0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017, 0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011,
    0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008, 0.008, 0.007, 0.010, 0.008, 0.009, 0.009, 0.009, 0.007,
    0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.01, 0.008,
]
HAND_SIGMAS = [
    0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021,
    0.021, 0.032, 0.02, 0.019, 0.022, 0.031,
]
NUMBER_TYPES = {int, float}  # what JSON numbers load as (bool is checked out: type(True) is bool)
WHOLEBODY_SIGMAS = np.array(list(COCO_SIGMAS) + FOOT_SIGMAS + FACE_SIGMAS + HAND_SIGMAS + HAND_SIGMAS)


def _load_json(path: str | Path, expected: str) -> Any:
    return load_json(path, expected)


def _number_rows(
    rows: list[Any], length: int, source: str, field: str, where_of: Callable[[int], str],
    kind: str = "result",
) -> None:
    """Every row a list of ``length`` finite numbers; one vectorised finiteness check over all rows.
    ``where_of(i)`` names row ``i`` in a message (only built on an error)."""
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != length:
            found = "missing" if row is None else (
                f"{len(row)} numbers" if isinstance(row, list) else repr(row)[:40])
            raise DataFormatError(source, f"'{field}' with {length} numbers in every {kind}",
                                  f"{where_of(index)}: {found}")
        if not set(map(type, row)) <= NUMBER_TYPES:
            number_list(row, length, source, field, where_of(index))  # raises, naming the element
    if not rows:
        return
    values = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, column = first_false(finite)
        raise DataFormatError(source, f"{field} as finite numbers",
                              f"{show(values[row, column])} at index {column} of {where_of(row)}")


def load_results(
    results: str | Path | Sequence[dict[str, Any]], keys: dict[str, int]
) -> list[dict[str, Any]]:
    """Results from a file or a list, checked: an integer ``image_id``, a finite ``score``, each key with
    ``3 * n`` finite numbers (x, y, score), an optional integer ``category_id`` (default 1) and, when the
    first result has a ``bbox``, a finite ``bbox`` in every result (pycocotools then reads areas from it).
    Ids are checked against the GT in ``check_result_ids``."""
    source = str(results) if isinstance(results, (str, Path)) else "<results>"
    data = _load_json(results, "a COCO keypoint results JSON list") if isinstance(results, (str, Path)) \
        else list(results)
    if not isinstance(data, list):
        raise DataFormatError(source, "a JSON list of {image_id, category_id, keypoints, score}",
                              type(data).__name__)
    with_bbox = bool(data) and isinstance(data[0], dict) and "bbox" in data[0] and data[0]["bbox"] != []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or "image_id" not in item or "score" not in item:
            raise DataFormatError(source, "every result to have image_id and score",
                                  f"entry {index}: {item!r:.80}")
        image_id, category, score = item["image_id"], item.setdefault("category_id", 1), item["score"]
        if type(image_id) is int and type(category) is int and type(score) in NUMBER_TYPES \
                and math.isfinite(score) and not with_bbox and "segmentation" not in item \
                and "caption" not in item:
            continue  # the common case, checked without building messages
        where = entry(index, item)
        integer_id(image_id, source, "image_id", where)
        integer_id(category, source, "category_id", where)
        finite_number(score, source, "score", where)
        for key in ("segmentation", "caption"):
            if key in item:
                raise DataFormatError(source, f"keypoint results without '{key}' (pycocotools would read "
                                      "them as another result type)", f"'{key}' in {where}")
        if with_bbox:
            number_list(item.get("bbox"), 4, source, "bbox", where)
    for key, count in keys.items():
        _number_rows([item.get(key) for item in data], 3 * count, source, key, lambda i: entry(i, data[i]))
    return data


def check_gt(data: Any, source: str, keys: dict[str, int]) -> None:
    """The GT fields COCOeval reads: image/category/annotation ids, each keypoint key with ``3 * n``
    finite numbers, a finite ``area`` and ``bbox``, ``num_keypoints``; annotations of listed images."""
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataFormatError(source, "a COCO JSON with images, annotations and categories",
                              f"keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    known: dict[str, set[int]] = {}
    for part, label in (("images", "image"), ("categories", "category")):
        if not isinstance(data[part], list):
            raise DataFormatError(source, f"'{part}' as a list", type(data[part]).__name__)
        known[part] = set()
        for index, item in enumerate(data[part]):
            where = f"{label} {index}"
            if not isinstance(item, dict) or "id" not in item:
                raise DataFormatError(source, f"an 'id' in every {label}", f"{repr(item)[:60]} in {where}")
            known[part].add(integer_id(item["id"], source, "id", where))
    annotations = data["annotations"]
    if not isinstance(annotations, list):
        raise DataFormatError(source, "'annotations' as a list", type(annotations).__name__)
    wheres = []
    for index, ann in enumerate(annotations):
        where = entry(index, ann).replace("entry", "annotation", 1)
        wheres.append(where)
        if not isinstance(ann, dict):
            raise DataFormatError(source, "every annotation as a JSON object", f"{repr(ann)[:60]} in {where}")
        for key in ("id", "image_id", "category_id", "area", "bbox", "num_keypoints"):
            if key not in ann:
                raise DataFormatError(source, f"'{key}' in every annotation", f"none in {where}")
        integer_id(ann["id"], source, "id", where)
        if integer_id(ann["image_id"], source, "image_id", where) not in known["images"]:
            raise DataFormatError(source, "annotations of images listed in 'images'",
                                  f"image_id {ann['image_id']} in {where}")
        if integer_id(ann["category_id"], source, "category_id", where) not in known["categories"]:
            raise DataFormatError(source, "annotations of categories listed in 'categories'",
                                  f"category_id {ann['category_id']} in {where}")
        finite_number(ann["area"], source, "area", where)
        finite_number(ann["num_keypoints"], source, "num_keypoints", where)
        if "iscrowd" in ann and not isinstance(ann["iscrowd"], (int, float)):
            raise DataFormatError(source, "'iscrowd' as 0 or 1", f"{repr(ann['iscrowd'])[:40]} in {where}")
        number_list(ann["bbox"], 4, source, "bbox", where)
    for key, count in keys.items():
        _number_rows([ann.get(key) for ann in annotations], 3 * count, source, key, wheres.__getitem__,
                     "annotation")


def check_result_ids(detections: list[dict[str, Any]], gt: Any, source: str) -> None:
    """Every result's ``image_id`` and ``category_id`` exist in the GT (pycocotools would assert, or
    silently drop the result)."""
    images, categories = set(gt.getImgIds()), set(gt.getCatIds())
    for index, item in enumerate(detections):
        if item["image_id"] not in images:
            raise DataFormatError(source, "image ids of the GT file",
                                  f"image_id {item['image_id']!r} in entry {index}")
        if item["category_id"] not in categories:
            raise DataFormatError(source, f"category ids of the GT file ({sorted(categories)[:5]})",
                                  f"category_id {item['category_id']!r} in {entry(index, item)}")


def _summarize(evaluator: Any, interval_key: str | None = "AP") -> dict[str, float]:
    """The 10 stats; inside ``bootstrap.collecting`` also the AP interval (``interval_key``; None: no
    interval), re-accumulated from the evaluator's own per-image matches."""
    # xtcocotools warns when a part score key (foot_score, ...) is absent; falling back to ``score`` is
    # the official behaviour and our results carry only ``score``.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not found, use 'score' instead")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if interval_key is not None and bootstrap.active():
        categories, rec_thrs = bootstrap.coco_categories(evaluator)
        bootstrap.offer("images", len(evaluator.params.imgIds),
                        bootstrap.coco_ap_statistic(categories, rec_thrs, key=interval_key))
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}


def _image_ids(gt: Any, image_ids: Sequence[int] | None) -> list[int]:
    ids = sorted(gt.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    unknown = set(ids) - set(gt.getImgIds())
    if unknown:
        raise UserError(f"image ids not in the GT file: {sorted(unknown)[:5]}")
    return ids


def coco_keypoint_ap(
    gt_file: str | Path,
    results: str | Path | Sequence[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """The 10 COCO keypoint stats from pycocotools' COCOeval (OKS, COCO sigmas, maxDets 20).

    ``image_ids`` restricts evaluation to the images that were predicted (``--limit`` runs); by
    default every GT image counts, so an image without predictions costs recall, as officially.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections = load_results(results, {"keypoints": 17})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = _coco_or_error(COCO, gt_file, {"keypoints": 17})
    check_result_ids(detections, gt, _source(results))
    ids = _image_ids(gt, image_ids)
    if not detections:
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
    evaluator = COCOeval(gt, dt, "keypoints")
    evaluator.params.imgIds = ids
    return _summarize(evaluator)


def _source(results: Any) -> str:
    return str(results) if isinstance(results, (str, Path)) else "<results>"


def _coco_or_error(coco_cls: Any, gt_file: str | Path, keys: dict[str, int]) -> Any:
    data = _load_json(gt_file, "a COCO keypoint annotation JSON")
    if isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data) \
            and data["annotations"] and isinstance(data["annotations"][0], dict) \
            and set(keys) - {"keypoints"} and not set(keys) <= set(data["annotations"][0]):
        missing = [key for key in keys if key not in data["annotations"][0]]
        raise DataFormatError(gt_file, "COCO-WholeBody annotations (foot_kpts, face_kpts, lefthand_kpts, "
                              "righthand_kpts)", f"no {', '.join(missing)}")
    check_gt(data, str(gt_file), keys)
    coco = coco_cls()
    coco.dataset = data
    coco.createIndex()
    return coco


def split_wholebody(keypoints: np.ndarray) -> dict[str, list[float]]:
    """(133, 3) [x, y, score] -> the official result keys (body as ``keypoints``), flat lists."""
    keypoints = np.asarray(keypoints, dtype=float).reshape(133, 3)
    out: dict[str, list[float]] = {}
    start = 0
    for _, key, count in WHOLEBODY_PARTS:
        out[key] = keypoints[start:start + count].reshape(-1).tolist()
        start += count
    return out


def wholebody_ap(
    gt_file: str | Path,
    results: str | Path | Sequence[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """Six xtcocotools COCOeval runs (body, foot, face, left hand, right hand, whole body), ``use_area``.

    Keys ``<part>/<stat>``; ``wholebody/AP`` is the headline number. Inside ``bootstrap.collecting``
    each part's AP (``body/AP`` ... ``wholebody/AP``) gets a bootstrap interval over images.
    """
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    keys = {key: count for _, key, count in WHOLEBODY_PARTS}
    detections = load_results(results, keys)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = _coco_or_error(COCO, gt_file, keys)
    check_result_ids(detections, gt, _source(results))
    ids = _image_ids(gt, image_ids)
    parts = [name for name, _, _ in WHOLEBODY_PARTS] + ["wholebody"]
    if not detections:
        return {f"{part}/{stat}": 0.0 for part in parts for stat in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
    scores: dict[str, float] = {}
    bounds = np.cumsum([0] + [count for _, _, count in WHOLEBODY_PARTS])
    for index, part in enumerate(parts):
        sigmas = (WHOLEBODY_SIGMAS if part == "wholebody"
                  else WHOLEBODY_SIGMAS[bounds[index]:bounds[index + 1]])
        evaluator = COCOeval(gt, dt, f"keypoints_{part}", np.array(sigmas), use_area=True)
        evaluator.params.useSegm = None
        evaluator.params.imgIds = ids
        # every part's AP gets its interval: the same images resampled, from this evaluator's matches
        for stat, value in _summarize(evaluator, f"{part}/AP").items():
            scores[f"{part}/{stat}"] = value
    return scores


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path, help="official GT annotation JSON")
    parser.add_argument("--pred", required=True, type=Path, help="keypoint results JSON (official format)")


register_metric_command(
    MetricCommand(
        name="coco-keypoints",
        help="COCO keypoint AP/AR (pycocotools COCOeval, OKS) of a results JSON against the GT JSON",
        add_arguments=_add_arguments,
        compute=lambda args: coco_keypoint_ap(args.gt, args.pred),
        main_metric="AP",
    )
)
register_metric_command(
    MetricCommand(
        name="wholebody",
        help="COCO-WholeBody AP/AR for body, foot, face, hands and whole body (xtcocotools, use_area)",
        add_arguments=_add_arguments,
        compute=lambda args: wholebody_ap(args.gt, args.pred),
        main_metric="wholebody/AP",
    )
)
