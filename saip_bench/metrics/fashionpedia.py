"""Fashionpedia AP^(IoU+F1) as fashionpedia-api's ``FPEval`` computes it, on pycocotools' COCOeval.

Why a COCOeval subclass: IoUs, area ranges, ``maxDets`` and the ignore flags are pycocotools' own; only
matching (both IoU >= t_IoU *and* attribute F1 >= t_F1), accumulation over the extra F1 axis and the
summaries differ (docs/formats.md#fashionpedia-ap-with-attribute-f1). Rules reproduced from the official
evaluator, quirks included:

- results load like ``Fashionpedia.loadRes``: if the first result has a ``bbox``, every ``area`` is the
  box area (even for mask evaluation); otherwise the mask area, and ``bbox`` comes from the mask;
- F1 = sklearn ``f1_score(gt, dt, average="macro")`` over multi-hot vectors of *all* attributes of the
  GT file (ids mapped through its ``attributes`` list, so non-contiguous ids are fine), computed here
  in closed form (identical to sklearn; tested against it);
- t_IoU and t_F1 run over 0.50:0.05:0.95 plus -1 ("constraint ignored"); a detection's best match must
  beat the best-so-far IoU *and* F1 at once; categories without attributes (not in
  ``CATS_WITH_ATTRIBUTES``) use COCO's IoU-only matching and a single F1 slot;
- primary ``AP`` averages precision over IoU thresholds x F1 thresholds (attribute categories) or IoU
  thresholds alone (the others), entries that are -1 (no GT) left out; super-class APs ``APo`` /
  ``APa`` / ``APp`` over category *indices* 0-12 / 13-26 / 27-45 (``APa`` only without F1).

Plain COCO mask/box AP (pycocotools ``COCOeval.summarize``) is reported next to it under ``coco/``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, register_metric_command
from saip_bench.metrics.checks import (
    check_range,
    entry,
    finite_number,
    integer_id,
    is_number,
    load_json,
    number_list,
    show,
)

CATS_WITH_ATTRIBUTES = (10, 7, 0, 6, 5, 4, 9, 31, 33, 3, 12, 11, 1, 2, 8, 32, 29, 28)
SUPER_CLASSES = ("o", "a", "p")
SUPER_CLASS_NAMES = ("outerwear", "accessory", "part")
SUPER_CLASS_INDICES = (np.arange(13), np.arange(13, 27), np.arange(27, 46))
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quiet() -> contextlib.AbstractContextManager:
    """pycocotools prints progress; keep CLI and test output clean."""
    return contextlib.redirect_stdout(io.StringIO())


def f1_thresholds() -> np.ndarray:
    thresholds = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    return np.append(thresholds, -1.0)


def binary_macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """sklearn ``f1_score(true, pred, average="macro")`` for two 0/1 vectors (labels present in either).

    Macro over the labels {0, 1} that occur in ``true`` or ``pred``; F1_l = 2 tp / (2 tp + fp + fn).
    """
    true = np.asarray(true).astype(bool)
    pred = np.asarray(pred).astype(bool)
    tp = float(np.sum(true & pred))
    tn = float(np.sum(~true & ~pred))
    fp = float(np.sum(~true & pred))
    fn = float(np.sum(true & ~pred))
    scores = []
    if true.any() or pred.any():  # label 1 present
        scores.append(2 * tp / (2 * tp + fp + fn))
    if (~true).any() or (~pred).any():  # label 0 present
        scores.append(2 * tn / (2 * tn + fn + fp))
    return float(np.mean(scores))


def rle_string_counts(counts: str) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string, decoded as pycocotools' ``rleFrString`` does.

    Why in numpy: the C decoder reads past the end of a string whose last count is cut off, and
    writes past the mask when the counts add up to more than height x width; a string is checked here
    before pycocotools sees it. Raises ``ValueError`` saying what is wrong.
    """
    try:
        raw = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64)
    except UnicodeEncodeError as exc:
        raise ValueError(f"a non-ASCII character at offset {exc.start}") from None
    if raw.size == 0:
        raise ValueError("empty counts")
    c = raw - 48
    outside = (c < 0) | (c > 63)
    if outside.any():
        raise ValueError(f"character {chr(int(raw[np.argmax(outside)]))!r} outside '0'..'o'")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("a last count cut off")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 6:
        raise ValueError("a count longer than 6 characters")
    group = np.repeat(np.arange(ends.size), lengths)
    shift = 5 * (np.arange(c.size) - starts[group])
    x = np.zeros(ends.size, dtype=np.int64)
    np.add.at(x, group, (c & 0x1F) << shift)
    negative = (c[ends] & 0x10) != 0
    x[negative] |= np.left_shift(-1, 5 * lengths[negative])
    runs = x.copy()  # counts from index 3 on are deltas to the count two before
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def check_segmentation(segm: Any, height: int, width: int, rle_only: bool, source: str, where: str) -> None:
    """A mask pycocotools can read safely: a compressed RLE ``{size: [h, w], counts: str}``, an
    uncompressed RLE (counts a list) or polygons (lists of >= 3 finite x, y pairs near the image), the
    RLE size being the image's and its runs adding up to h x w. ``rle_only``: what ``loadRes`` accepts
    for results without ``bbox`` (it reads the area of a compressed RLE)."""
    field = f"segmentation of {where}"
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not isinstance(size, list) or len(size) != 2 or [height, width] != size \
                or not all(is_number(v) for v in size):
            raise DataFormatError(source, f"RLE size [height, width] = [{height}, {width}] (the image's)",
                                  f"size {show(size)} in {field}")
        if isinstance(counts, str):
            try:
                runs = rle_string_counts(counts)
            except ValueError as exc:
                raise DataFormatError(source, "compressed RLE counts (pycocotools' string encoding)",
                                      f"{exc} in {field}") from None
        elif isinstance(counts, list) and not rle_only:
            if not all(is_number(v) and float(v) == int(v) for v in counts):
                raise DataFormatError(source, "RLE counts as integers", f"{show(counts)} in {field}")
            runs = np.asarray(counts, dtype=np.int64)
        else:
            kind = "a compressed RLE string" if rle_only else "a string or a list of run lengths"
            raise DataFormatError(source, f"RLE counts as {kind}", f"{show(counts)} in {field}")
        if runs.size == 0:
            raise DataFormatError(source, "RLE counts with at least one run", f"no runs in {field}")
        if (runs < 0).any() or int(runs.sum()) != height * width:
            raise DataFormatError(source, f"RLE runs >= 0 adding up to height x width = {height * width}",
                                  f"runs adding up to {int(runs.sum())} (smallest {int(runs.min())}) "
                                  f"in {field}")
        return
    if rle_only or not isinstance(segm, list) or not segm:
        wanted = "an RLE {size, counts}" if rle_only else "an RLE {size, counts} or a list of polygons"
        raise DataFormatError(source, wanted, f"{show(segm)} in {field}")
    low, high = -float(max(height, width)), 2.0 * max(height, width)
    for index, polygon in enumerate(segm):
        points = number_list(polygon, None, source, f"polygon {index}", field)
        if points.size < 6 or points.size % 2:
            raise DataFormatError(source, "polygons of at least 3 (x, y) points",
                                  f"{points.size} numbers in polygon {index} of {field}")
        check_range(points, low, high, source, f"polygon {index} of {field}",
                    " (within one image size of the image)")


def _check_box(box: Any, height: int, width: int, source: str, where: str) -> None:
    x, y, w, h = number_list(box, 4, source, "bbox", where)
    size = float(max(height, width))
    corners = np.array([x, y, x + w, y + h])
    check_range(corners, -size, 2 * size, source, f"bbox corners (x, y, x + w, y + h) of {where}",
                " (within one image size of the image)")


def _known_ids(dataset: dict[str, Any], key: str, label: str, source: str) -> dict[int, dict[str, Any]]:
    items = dataset[key]
    if not isinstance(items, list):
        raise DataFormatError(source, f'"{key}" as a list', type(items).__name__)
    out = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise DataFormatError(source, f'an "id" in every {label}', f"{show(item)} in {label} {index}")
        out[integer_id(item["id"], source, "id", f"{label} {index}")] = item
    return out


def _image_sizes(dataset: dict[str, Any], source: str) -> dict[int, tuple[int, int]]:
    sizes = {}
    for image_id, image in _known_ids(dataset, "images", "image", source).items():
        where = f"image {image_id}"
        height = integer_id(image.get("height"), source, "height", where)
        width = integer_id(image.get("width"), source, "width", where)
        if height < 1 or width < 1:
            raise DataFormatError(source, "positive image height and width", f"{height} x {width} in {where}")
        sizes[image_id] = (height, width)
    return sizes


def _check_attributes(ids: Any, attributes: Any, source: str, where: str) -> None:
    if not isinstance(ids, list):
        raise DataFormatError(source, "attribute_ids as a list", f"{show(ids)} in {where}")
    for index, value in enumerate(ids):
        if integer_id(value, source, "attribute_ids", where) not in attributes:
            raise DataFormatError(source, "attribute ids listed in the GT's attributes",
                                  f"attribute id {show(value)} at index {index} of attribute_ids in {where}")


def check_ground_truth(dataset: dict[str, Any], source: str) -> None:
    """Ids, image sizes, attribute ids, areas, boxes and masks of a Fashionpedia GT (what COCOeval reads)."""
    sizes = _image_sizes(dataset, source)
    categories = _known_ids(dataset, "categories", "category", source)
    attributes = _known_ids(dataset, "attributes", "attribute", source)
    annotations = dataset["annotations"]
    if not isinstance(annotations, list):
        raise DataFormatError(source, '"annotations" as a list', type(annotations).__name__)
    for index, ann in enumerate(annotations):
        where = f"annotation {index}"
        if not isinstance(ann, dict):
            raise DataFormatError(source, "every annotation as a JSON object", f"{show(ann)} in {where}")
        where = entry(index, ann).replace("entry", "annotation", 1)
        for key in ("id", "image_id", "category_id", "segmentation", "area", "iscrowd", "attribute_ids"):
            if key not in ann:
                raise DataFormatError(source, f'"{key}" in every annotation', f"none in {where}")
        integer_id(ann["id"], source, "id", where)
        image_id = integer_id(ann["image_id"], source, "image_id", where)
        if image_id not in sizes:
            raise DataFormatError(source, "annotations of listed images", f"image_id {image_id} in {where}")
        if integer_id(ann["category_id"], source, "category_id", where) not in categories:
            raise DataFormatError(source, "annotations of listed categories",
                                  f"category_id {show(ann['category_id'])} in {where}")
        _check_attributes(ann["attribute_ids"], attributes, source, where)
        finite_number(ann["area"], source, "area", where)
        if ann["iscrowd"] not in (0, 1) or isinstance(ann["iscrowd"], float):
            raise DataFormatError(source, "iscrowd 0 or 1", f"{show(ann['iscrowd'])} in {where}")
        height, width = sizes[image_id]
        check_segmentation(ann["segmentation"], height, width, False, source, where)
        if "bbox" in ann:
            _check_box(ann["bbox"], height, width, source, where)


def check_results(dataset: dict[str, Any], results: Any, source: str,
                  cats_with_attributes: Sequence[int] = CATS_WITH_ATTRIBUTES) -> None:
    """Each result as ``Fashionpedia.loadRes`` and the evaluator read it, checked against the GT: ids of
    the GT, a finite score, attribute ids of the GT, a finite box near the image, a mask pycocotools can
    read safely (an RLE of the image's size when results have no boxes)."""
    if not isinstance(results, list):
        raise DataFormatError(source, "a JSON list of results", type(results).__name__)
    sizes = {int(image["id"]): (int(image["height"]), int(image["width"])) for image in dataset["images"]}
    categories = {int(cat["id"]) for cat in dataset["categories"]}
    attributes = {int(att["id"]) for att in dataset["attributes"]}
    with_attributes = set(cats_with_attributes)
    with_boxes = bool(results) and isinstance(results[0], dict) and "bbox" in results[0]
    for index, item in enumerate(results):
        if not isinstance(item, dict):
            raise DataFormatError(source, "every result as a JSON object", f"{show(item)} in entry {index}")
        where = entry(index, item)
        for key in ("image_id", "category_id", "score"):
            if key not in item:
                raise DataFormatError(source, f'results with "{key}"', f"keys {sorted(item)} in {where}")
        image_id = integer_id(item["image_id"], source, "image_id", where)
        if image_id not in sizes:
            raise DataFormatError(source, "image ids of the GT file", f"image_id {image_id} in {where}")
        category = integer_id(item["category_id"], source, "category_id", where)
        if category not in categories:
            raise DataFormatError(source, "category ids of the GT file", f"category_id {category} in {where}")
        finite_number(item["score"], source, "score", where)
        if "attribute_ids" in item:
            _check_attributes(item["attribute_ids"], attributes, source, where)
        elif category in with_attributes:
            raise DataFormatError(source, f'"attribute_ids" in every result of category {category}',
                                  f"none in {where}")
        height, width = sizes[image_id]
        if with_boxes or "bbox" in item:
            if "bbox" not in item:
                raise DataFormatError(source, '"bbox" in every result (the first one has it)',
                                      f"none in {where}")
            _check_box(item["bbox"], height, width, source, where)
        if "segmentation" in item or not with_boxes:
            if "segmentation" not in item:
                raise DataFormatError(source, 'results with "bbox" or "segmentation"', f"neither in {where}")
            check_segmentation(item["segmentation"], height, width, not with_boxes, source, where)


def load_ground_truth(source: str | Path | dict[str, Any]) -> COCO:
    """A COCO index of the GT file plus ``attrs`` (attribute id -> record, file order)."""
    if isinstance(source, dict):
        dataset, name = source, "GT"
    else:
        name = str(source)
        dataset = _read_json(source, "a Fashionpedia annotation JSON (COCO + attributes)")
    if not isinstance(dataset, dict):
        raise DataFormatError(name, "a COCO JSON object (Fashionpedia schema)", type(dataset).__name__)
    for key in ("images", "annotations", "categories", "attributes"):
        if key not in dataset:
            raise DataFormatError(name, f'a COCO JSON with "{key}" (Fashionpedia schema)', "key missing")
    check_ground_truth(dataset, name)
    gt = COCO()
    gt.dataset = dataset
    with _quiet():
        gt.createIndex()
    gt.attrs = {att["id"]: att for att in dataset["attributes"]}  # type: ignore[attr-defined]
    for ann in gt.dataset["annotations"]:
        if "bbox" not in ann:  # the pre-release sample lacks boxes; the 2020 files have them
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(gt.annToRLE(ann))]
    return gt


def load_results(gt: COCO, results: Sequence[dict[str, Any]], source: str = "results",
                 checked: bool = False) -> COCO:
    """Fashionpedia ``loadRes``: ids 1.., iscrowd 0, area from bbox (when given) or from the mask.

    The results are checked first (``check_results``) unless the caller did (``checked``)."""
    anns = copy.deepcopy(list(results))
    if not anns:
        raise UserError(f"{source}: no detections to score")
    if not checked:
        check_results(gt.dataset, anns, source)
    res = COCO()
    res.dataset["images"] = list(gt.dataset["images"])
    if "bbox" in anns[0] and not anns[0]["bbox"] == []:
        for index, ann in enumerate(anns):
            x, y, w, h = ann["bbox"]
            if "segmentation" not in ann:
                ann["segmentation"] = [[x, y, x, y + h, x + w, y + h, x + w, y]]
            ann["area"] = w * h
            ann["id"] = index + 1
            ann["iscrowd"] = 0
    elif "segmentation" in anns[0]:
        for index, ann in enumerate(anns):
            ann["area"] = mask_utils.area(ann["segmentation"])
            if "bbox" not in ann:
                ann["bbox"] = mask_utils.toBbox(ann["segmentation"])
            ann["id"] = index + 1
            ann["iscrowd"] = 0
    else:
        raise DataFormatError(source, 'results with "bbox" or "segmentation"', f"keys {sorted(anns[0])}")
    res.dataset["annotations"] = anns
    res.dataset["attributes"] = gt.dataset["attributes"]
    res.dataset["categories"] = gt.dataset["categories"]
    with _quiet():
        res.createIndex()
    return res


class FashionpediaEval(COCOeval):
    """COCOeval with the F1 axis: precision is (IoU, F1, recall, category, area, maxDets)."""

    def __init__(self, gt: COCO, dt: COCO, iou_type: str = "segm",
                 cats_with_attributes: Sequence[int] = CATS_WITH_ATTRIBUTES) -> None:
        if iou_type not in ("segm", "bbox"):
            raise UserError(f"iou type must be segm or bbox, got {iou_type!r}")
        super().__init__(gt, dt, iou_type)
        self.params.iouThrs = np.append(self.params.iouThrs, -1.0)
        self.f1Thrs = f1_thresholds()
        self.cats_with_attributes = list(cats_with_attributes)
        attribute_ids = list(gt.attrs)  # type: ignore[attr-defined]
        self._attribute_index = {a: i for i, a in enumerate(attribute_ids)}
        self._num_attributes = len(attribute_ids)
        self.results: dict[str, float] = {}

    # -- per image --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        super()._prepare()
        self.cats = self.cocoGt.loadCats(self.params.catIds)

    def evaluate(self) -> None:
        p = self.params
        p.imgIds = list(np.unique(p.imgIds))
        if p.useCats:
            p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        self.params = p
        self._prepare()
        cat_ids = p.catIds if p.useCats else [-1]
        self.ious = {(i, c): self.computeIoU(i, c) for i in p.imgIds for c in cat_ids}
        self.f1s = {(i, c): self.computeF1(i, c) for i in p.imgIds for c in cat_ids
                    if c in self.cats_with_attributes}
        self.evalImgs = [self.evaluateImg(i, c, area, p.maxDets[-1])
                         for c in cat_ids for area in p.areaRng for i in p.imgIds]

    def _gt_dt(self, img_id: int, cat_id: int) -> tuple[list[dict], list[dict]]:
        p = self.params
        if p.useCats:
            return self._gts[img_id, cat_id], self._dts[img_id, cat_id]
        gt = [g for c in p.catIds for g in self._gts[img_id, c]]
        dt = [d for c in p.catIds for d in self._dts[img_id, c]]
        return gt, dt

    @staticmethod
    def _sort_dt(dt: list[dict]) -> list[dict]:
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        return [dt[i] for i in order]

    def _multihot(self, attribute_ids: Sequence[int]) -> np.ndarray:
        vector = np.zeros(self._num_attributes, dtype=np.int32)
        for attribute in attribute_ids:
            if attribute not in self._attribute_index:
                raise DataFormatError("results/GT", "attribute ids listed in the GT's attributes",
                                      f"attribute id {attribute}")
            vector[self._attribute_index[attribute]] = 1
        return vector

    def computeF1(self, img_id: int, cat_id: int) -> np.ndarray | list:
        gt, dt = self._gt_dt(img_id, cat_id)
        if len(gt) == 0 and len(dt) == 0:
            return []
        dt = self._sort_dt(dt)[: self.params.maxDets[-1]]
        for d in dt:
            if "attribute_ids" not in d:
                raise DataFormatError("results", 'an "attribute_ids" list in every detection',
                                      f"detection of image {img_id}, category {cat_id} without it")
        gt_hot = [self._multihot(g["attribute_ids"]) for g in gt]
        f1s = np.zeros((len(dt), len(gt)))
        for i, d in enumerate(dt):
            dt_hot = self._multihot(d["attribute_ids"])
            for j in range(len(gt)):
                f1s[i, j] = binary_macro_f1(gt_hot[j], dt_hot)
        return f1s

    @staticmethod
    def _expand(array: np.ndarray) -> np.ndarray:
        if array.ndim == 1:
            array = array[:, np.newaxis]
        return array[:, np.newaxis, :]

    def evaluateImg(self, img_id: int, cat_id: int, area_range: list[float], max_det: int):
        num_f1 = len(self.f1Thrs)
        if cat_id not in self.cats_with_attributes:
            result = super().evaluateImg(img_id, cat_id, area_range, max_det)
            if result is None:
                return None
            for key in ("dtMatches", "gtMatches", "gtIgnore", "dtIgnore"):
                result[key] = self._expand(np.asarray(result[key]))
            return result
        gt, dt = self._gt_dt(img_id, cat_id)
        if len(gt) == 0 and len(dt) == 0:
            return None
        for g in gt:
            outside = g["area"] < area_range[0] or g["area"] > area_range[1]
            g["_ignore"] = 1 if (g["ignore"] or outside) else 0
        gt_order = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
        gt = [gt[i] for i in gt_order]
        dt = self._sort_dt(dt)[:max_det]
        ious = self.ious[img_id, cat_id]
        ious = ious[:, gt_order] if len(ious) > 0 else ious
        f1s = self.f1s[img_id, cat_id]
        f1s = f1s[:, gt_order] if len(f1s) > 0 else f1s
        num_iou = len(self.params.iouThrs)
        gt_matches = np.zeros((num_iou, num_f1, len(gt)))
        dt_matches = np.zeros((num_iou, num_f1, len(dt)))
        gt_ignore = np.array([g["_ignore"] for g in gt])
        dt_ignore = np.zeros((num_iou, num_f1, len(dt)))
        for t, iou_thr in enumerate(self.params.iouThrs):
            if len(ious) == 0:
                break
            for f, f1_thr in enumerate(self.f1Thrs):
                for d_index, d in enumerate(dt):
                    best_iou = min(iou_thr, 1 - 1e-10)
                    best_f1 = min(f1_thr, 1 - 1e-10)
                    m = -1
                    for g_index in range(len(gt)):
                        if gt_matches[t, f, g_index] > 0:
                            continue
                        if m > -1 and gt_ignore[m] == 0 and gt_ignore[g_index] == 1:
                            break
                        if ious[d_index, g_index] < best_iou or f1s[d_index, g_index] < best_f1:
                            continue
                        best_iou, best_f1, m = ious[d_index, g_index], f1s[d_index, g_index], g_index
                    if m == -1:
                        continue
                    dt_ignore[t, f, d_index] = gt_ignore[m]
                    dt_matches[t, f, d_index] = gt[m]["id"]
                    gt_matches[t, f, m] = d["id"]
        outside = np.array([d["area"] < area_range[0] or d["area"] > area_range[1] for d in dt])
        outside = np.broadcast_to(outside.reshape(1, 1, len(dt)), dt_ignore.shape)
        dt_ignore = np.logical_or(dt_ignore, np.logical_and(dt_matches == 0, outside))
        return {
            "image_id": img_id, "category_id": cat_id, "aRng": area_range, "maxDet": max_det,
            "dtIds": [d["id"] for d in dt], "gtIds": [g["id"] for g in gt],
            "dtMatches": dt_matches, "gtMatches": gt_matches, "dtScores": [d["score"] for d in dt],
            "gtIgnore": gt_ignore, "dtIgnore": dt_ignore,
        }

    # -- over the split ---------------------------------------------------------------------------
    def accumulate(self, p: Any = None) -> None:
        p = self.params if p is None else p
        p.catIds = p.catIds if p.useCats else [-1]
        num_iou, num_f1_all, num_rec = len(p.iouThrs), len(self.f1Thrs), len(p.recThrs)
        num_cat = len(p.catIds) if p.useCats else 1
        num_area, num_det, num_img = len(p.areaRng), len(p.maxDets), len(p.imgIds)
        precision = -np.ones((num_iou, num_f1_all, num_rec, num_cat, num_area, num_det))
        recall = -np.ones((num_iou, num_f1_all, num_cat, num_area, num_det))
        for k in range(num_cat):
            # the official code tests the category *index* here (ids are 0-based, so they coincide)
            f1_slots = [-1] if k not in self.cats_with_attributes else list(range(num_f1_all))
            for a in range(num_area):
                offset = k * num_area * num_img + a * num_img
                evals = [self.evalImgs[offset + i] for i in range(num_img)]
                evals = [e for e in evals if e is not None]
                if not evals:
                    continue
                for m_index, max_det in enumerate(p.maxDets):
                    scores = np.concatenate([e["dtScores"][:max_det] for e in evals], axis=0)
                    order = np.argsort(-scores, kind="mergesort")
                    dt_matches = np.concatenate([e["dtMatches"][:, :, :max_det] for e in evals], axis=2)
                    dt_matches = dt_matches[:, :, order]
                    dt_ignore = np.concatenate([e["dtIgnore"][:, :, :max_det] for e in evals], axis=2)
                    dt_ignore = dt_ignore[:, :, order]
                    gt_ignore = np.concatenate([e["gtIgnore"] for e in evals])
                    num_gt = np.count_nonzero(gt_ignore == 0)
                    if num_gt == 0:
                        continue
                    tps = np.logical_and(dt_matches, np.logical_not(dt_ignore))
                    fps = np.logical_and(np.logical_not(dt_matches), np.logical_not(dt_ignore))
                    tp_sum = np.cumsum(tps, axis=2).astype(np.float64)
                    fp_sum = np.cumsum(fps, axis=2).astype(np.float64)
                    for t in range(num_iou):
                        for f in f1_slots:
                            tp, fp = tp_sum[t, f, :], fp_sum[t, f, :]
                            rc = tp / num_gt
                            recall[t, f, k, a, m_index] = rc[-1] if len(tp) else 0
                            pr = (tp / (fp + tp + np.spacing(1))).tolist()
                            for i in range(len(tp) - 1, 0, -1):
                                if pr[i] > pr[i - 1]:
                                    pr[i - 1] = pr[i]
                            inserts = np.searchsorted(rc, p.recThrs, side="left")
                            at_recall = [0.0] * num_rec
                            for r, index in enumerate(inserts):
                                if index >= len(pr):
                                    break
                                at_recall[r] = pr[index]
                            precision[t, f, :, k, a, m_index] = np.array(at_recall)
        self.eval = {"params": p, "precision": precision, "recall": recall}

    def _summarize_one(self, kind: str, iou_thr: float | None = None, f1_thr: float | None = None,
                       f1: bool = True, iou: bool = True, area: str = "all", max_dets: int = 100,
                       super_index: int | None = None) -> float:
        p = self.params
        area_index = [i for i, label in enumerate(p.areaRngLbl) if label == area]
        det_index = [i for i, m in enumerate(p.maxDets) if m == max_dets]
        s = self.eval["precision"] if kind == "ap" else self.eval["recall"]
        # area / maxDets first (the official code selects them last; the values are the same, this is faster)
        if not area_index or not det_index:
            return -1.0
        a, m = area_index[0], det_index[0]
        s = s[..., a : a + 1, m : m + 1]
        cat_axis = 3 if kind == "ap" else 2
        if iou and iou_thr is not None:
            s = s[np.where(iou_thr == p.iouThrs)[0]]
        elif iou:
            s = s[:-1]
        else:
            s = s[[-1]]

        def take(array: np.ndarray, f_index: Any, c: int) -> np.ndarray:
            # one axis at a time: two list indices split by a slice would move axes in numpy
            index: list[Any] = [slice(None)] * array.ndim
            index[cat_axis] = slice(c, c + 1)
            return array[tuple(index)][:, f_index]

        def selected(c: int) -> bool:
            return super_index is None or c in SUPER_CLASS_INDICES[super_index]

        if f1:
            parts = []
            for c in range(len(self.cats)):
                if not selected(c):
                    continue
                if c in self.cats_with_attributes:
                    f_indices = (list(np.where(f1_thr == self.f1Thrs)[0]) if f1_thr is not None
                                 else [[i] for i in range(len(self.f1Thrs) - 1)])
                    if f1_thr is not None:
                        parts.append(take(s, f_indices, c))
                    else:
                        parts.extend(take(s, fi, c) for fi in f_indices)
                else:
                    parts.append(take(s, [-1], c))
            s = np.concatenate(parts, axis=cat_axis) if parts else np.empty((0,))
        else:
            s = s[:, [-1]]
            if super_index is not None:
                s = np.take(s, SUPER_CLASS_INDICES[super_index], axis=cat_axis)
        valid = s[s > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def summarize_all(self, f1: bool = True, iou: bool = True) -> dict[str, float]:
        """The official ``_summarize_with_cat`` keys for one (f1, iou) setting."""
        kwargs = {"f1": f1, "iou": iou}
        results: dict[str, float] = {}
        for index, short in enumerate(SUPER_CLASSES):
            if index == 1 and f1:
                continue
            results["AP" + short] = self._summarize_one("ap", super_index=index, **kwargs)
        results["AP"] = self._summarize_one("ap", **kwargs)
        if iou:
            results["AP_IOU50"] = self._summarize_one("ap", iou_thr=0.5, **kwargs)
            results["AP_IOU75"] = self._summarize_one("ap", iou_thr=0.75, **kwargs)
        if f1:
            for thr in (0.5, 0.75):
                results[f"AP_F1{int(thr * 100)}"] = self._summarize_one("ap", f1_thr=thr, **kwargs)
        if f1 and iou:
            for iou_thr in (0.5, 0.75):
                for f1_thr in (0.5, 0.75):
                    results[f"AP_IOU{int(iou_thr * 100)}_F1{int(f1_thr * 100)}"] = self._summarize_one(
                        "ap", iou_thr=iou_thr, f1_thr=f1_thr, **kwargs)
        for area, key in (("small", "APs"), ("medium", "APm"), ("large", "APl")):
            results[key] = self._summarize_one("ap", area=area, **kwargs)
        for max_det in self.params.maxDets:
            results[f"AR@{max_det}"] = self._summarize_one("ar", max_dets=max_det, **kwargs)
        for area in ("small", "medium", "large"):
            results[f"AR{area[0]}@100"] = self._summarize_one("ar", area=area, **kwargs)
        return results

    def run(self) -> dict[str, dict[str, float]]:
        with _quiet():
            self.evaluate()
            self.accumulate()
        return {"iou+f1": self.summarize_all(), "iou": self.summarize_all(f1=False),
                "f1": self.summarize_all(iou=False)}


def fashion_ap_statistic(evaluator: FashionpediaEval) -> bootstrap.Statistic:
    """AP^(IoU+F1) of resampled images: IoU thresholds 0.50:0.95 x F1 thresholds 0.50:0.95 for categories
    with attributes, the IoU-only slot for the others (the "-1" thresholds left out, as ``summarize_all``)."""
    def slots(k: int, shape: tuple[int, ...]) -> list[int]:
        num_iou, num_f1 = shape  # (IoU, F1) thresholds; one F1 slot for categories without attributes
        f_slots = range(num_f1 - 1) if k in evaluator.cats_with_attributes else [num_f1 - 1]
        return [t * num_f1 + f for t in range(num_iou - 1) for f in f_slots]

    return bootstrap.coco_ap_statistic(*bootstrap.coco_categories(evaluator, slots))


def coco_ap(gt: COCO, dt: COCO, iou_type: str) -> dict[str, float]:
    """Standard pycocotools summary (IoU only, COCO's own matching) for comparison with other papers."""
    evaluator = COCOeval(gt, dt, iou_type)
    with _quiet():
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats, strict=True)}


def evaluate(gt_source: str | Path | dict[str, Any], results: str | Path | Sequence[dict[str, Any]],
             iou_types: Sequence[str] = ("segm", "bbox"),
             cats_with_attributes: Sequence[int] = CATS_WITH_ATTRIBUTES) -> dict[str, float]:
    """Flat dict: ``<iouType>/<key>`` (IoU+F1), ``<iouType>/iou/<key>``, ``<iouType>/f1/<key>`` and
    ``<iouType>/coco/<stat>``; values are fractions, -1 where the official code reports -1 (no GT)."""
    results_list = (_read_json(results, "a JSON list of Fashionpedia results")
                    if isinstance(results, (str, Path)) else list(results))
    if not isinstance(results_list, list):
        raise DataFormatError(str(results), "a JSON list of results", type(results_list).__name__)
    source = str(results) if isinstance(results, (str, Path)) else "results"
    out: dict[str, float] = {}
    for number, iou_type in enumerate(iou_types):
        gt = load_ground_truth(copy.deepcopy(gt_source) if isinstance(gt_source, dict) else gt_source)
        if number == 0 and results_list:
            check_results(gt.dataset, results_list, source, cats_with_attributes)
        dt = load_results(gt, results_list, source, checked=True)
        evaluator = FashionpediaEval(gt, dt, iou_type, cats_with_attributes)
        summary = evaluator.run()
        if bootstrap.active():
            bootstrap.offer("images", len(evaluator.params.imgIds),
                            lambda e=evaluator: fashion_ap_statistic(e), prefix=f"{iou_type}/", lazy=True)
        for setting, values in summary.items():
            prefix = f"{iou_type}/" if setting == "iou+f1" else f"{iou_type}/{setting}/"
            out.update({prefix + key: value for key, value in values.items()})
        out.update({f"{iou_type}/coco/{k}": v for k, v in coco_ap(gt, dt, iou_type).items()})
    return out


def _read_json(path: str | Path, expected: str) -> Any:
    return load_json(path, expected)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, help="instances_attributes_val2020.json")
    parser.add_argument(
        "--pred", required=True,
        help="results JSON [{image_id, category_id, attribute_ids, segmentation|bbox, score}]")
    parser.add_argument("--iou-type", choices=("segm", "bbox", "both"), default="both")


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    types = ("segm", "bbox") if args.iou_type == "both" else (args.iou_type,)
    return evaluate(args.gt, args.pred, types)


register_metric_command(MetricCommand(
    name="fashionpedia",
    help="Fashionpedia AP with IoU + attribute F1 (fashionpedia-api rules) and COCO mask/box AP",
    add_arguments=_add_arguments,
    compute=_compute,
    main_metric="segm/AP",
))
