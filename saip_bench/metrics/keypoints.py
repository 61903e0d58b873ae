"""COCO keypoint AP (pycocotools) and COCO-WholeBody AP (xtcocotools), on the official GT JSON.

Why the reference libraries and not our own OKS: the protocol's details (ignored GTs absorbing detections,
maxDets 20, 101-point interpolation, area ranges, and for whole-body the per-part ignore rules and the
body area used for every part) are what make numbers comparable with published ones (FORMATS.md §13.4-13.5).
Scores are fractions in [0, 1] (pycocotools' ``stats``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics.base import MetricCommand, register_metric_command

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
WHOLEBODY_SIGMAS = np.array(list(COCO_SIGMAS) + FOOT_SIGMAS + FACE_SIGMAS + HAND_SIGMAS + HAND_SIGMAS)


def _load_json(path: str | Path, expected: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataFormatError(path, expected, "nothing at that path") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, expected, f"unreadable JSON ({exc})") from exc


def load_results(
    results: str | Path | Sequence[dict[str, Any]], keys: dict[str, int]
) -> list[dict[str, Any]]:
    """Results from a file or a list, checked: ``image_id``, ``score`` and each key with ``3 * n`` numbers."""
    source = str(results) if isinstance(results, (str, Path)) else "<results>"
    data = _load_json(results, "a COCO keypoint results JSON list") if isinstance(results, (str, Path)) \
        else list(results)
    if not isinstance(data, list):
        raise DataFormatError(source, "a JSON list of {image_id, category_id, keypoints, score}",
                              type(data).__name__)
    for index, item in enumerate(data):
        if not isinstance(item, dict) or "image_id" not in item or "score" not in item:
            raise DataFormatError(source, "every result to have image_id and score",
                                  f"entry {index}: {item!r:.80}")
        for key, count in keys.items():
            values = item.get(key)
            if not isinstance(values, list) or len(values) != 3 * count:
                found = "missing" if values is None else (
                    f"{len(values)} numbers" if isinstance(values, list) else repr(values))
                raise DataFormatError(source, f"'{key}' with {3 * count} numbers in every result",
                                      f"entry {index}: {found}")
        item.setdefault("category_id", 1)
    return data


def _summarize(evaluator: Any) -> dict[str, float]:
    # xtcocotools warns when a part score key (foot_score, ...) is absent; falling back to ``score`` is
    # the official behaviour and our results carry only ``score``.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not found, use 'score' instead")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
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
        gt = _coco_or_error(COCO, gt_file)
    ids = _image_ids(gt, image_ids)
    if not detections:
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
    evaluator = COCOeval(gt, dt, "keypoints")
    evaluator.params.imgIds = ids
    return _summarize(evaluator)


def _coco_or_error(coco_cls: Any, gt_file: str | Path) -> Any:
    data = _load_json(gt_file, "a COCO keypoint annotation JSON")
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataFormatError(gt_file, "a COCO JSON with images, annotations and categories",
                              f"keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
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

    Keys ``<part>/<stat>``; ``wholebody/AP`` is the headline number.
    """
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    detections = load_results(results, {key: count for _, key, count in WHOLEBODY_PARTS})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = _coco_or_error(COCO, gt_file)
    first = next(iter(gt.anns.values()), {})
    missing = [key for _, key, _ in WHOLEBODY_PARTS[1:] if gt.anns and key not in first]
    if missing:
        raise DataFormatError(gt_file, "COCO-WholeBody annotations (foot_kpts, face_kpts, lefthand_kpts, "
                              "righthand_kpts)", f"no {', '.join(missing)}")
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
        for stat, value in _summarize(evaluator).items():
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
