"""Top-down pose pieces on mmpose: dataset meta, person instances (GT or detected boxes), crop pipelines
with mmpose's transforms and heatmap codecs, flip test, decoding back to the image, rescoring and OKS-NMS.

Why mmpose: its ``GetBBoxCenterScale`` / ``TopdownAffine`` (UDP warp) and the UDP / MSRA heatmap codecs
are the reference implementations the published numbers were made with; re-deriving the half-pixel
conventions is how pose baselines silently lose 1-2 AP. mmpose is imported lazily, so the package imports
without it (only the pose tasks need it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saip_bench.errors import DataFormatError, UserError
from saip_bench.tasks.dense.device_crops import warp_matrix
from saip_bench.tasks.dense.heatmap_targets import to_heatmap_coordinates

# mmpose dataset meta files (``mmpose/.mim/configs/_base_/datasets/<name>.py``) by keypoint layout.
METAINFO_FILES = {"coco": "coco.py", "coco_wholebody": "coco_wholebody.py"}


@dataclass(frozen=True)
class PoseMeta:
    """What the pipeline needs to know about a keypoint layout."""

    name: str
    num_keypoints: int
    flip_indices: list[int]
    skeleton: list[tuple[int, int]]  # 0-based limbs for drawing
    upper_body_ids: list[int]
    lower_body_ids: list[int]
    sigmas: np.ndarray


def pose_meta(name: str) -> PoseMeta:
    """Flip indices, skeleton and body halves from mmpose's dataset meta (``coco`` or ``coco_wholebody``)."""
    if name not in METAINFO_FILES:
        raise UserError(f"unknown keypoint layout {name!r}; known: {', '.join(METAINFO_FILES)}")
    import mmpose
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    config = Path(mmpose.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / METAINFO_FILES[name]
    info = parse_pose_metainfo({"from_file": str(config)})
    return PoseMeta(
        name=name,
        num_keypoints=int(info["num_keypoints"]),
        flip_indices=[int(i) for i in info["flip_indices"]],
        skeleton=[(int(a), int(b)) for a, b in info["skeleton_links"]],
        upper_body_ids=[int(i) for i in info["upper_body_ids"]],
        lower_body_ids=[int(i) for i in info["lower_body_ids"]],
        sigmas=np.asarray(info["sigmas"], dtype=float),
    )


def codec_config(kind: str, input_hw: tuple[int, int], sigma: float) -> dict[str, Any]:
    """mmpose codec config: ``udp`` (UDPHeatmap) or ``msra`` (MSRAHeatmap), heatmap = input / 4."""
    height, width = input_hw
    types = {"udp": "UDPHeatmap", "msra": "MSRAHeatmap"}
    if kind not in types:
        raise UserError(f"unknown heatmap codec {kind!r}; known: udp, msra")
    return {"type": types[kind], "input_size": (width, height), "heatmap_size": (width // 4, height // 4),
            "sigma": float(sigma)}


def build_codec(config: dict[str, Any]) -> Any:
    from mmpose.registry import KEYPOINT_CODECS

    return KEYPOINT_CODECS.build(dict(config))


# ---- person instances -----------------------------------------------------------------------------

def _valid_box(bbox: Sequence[float], width: int, height: int) -> list[float] | None:
    """COCO box clipped to the image as mmpose does; None when degenerate (w or h below 1 pixel)."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w)), min(height - 1.0, y1 + max(0.0, h))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return [x1, y1, x2 - x1, y2 - y1]


def gt_instances(records: Sequence[dict[str, Any]], num_keypoints: int, train: bool) -> list[dict[str, Any]]:
    """One instance per labelled person. Training drops crowds and people without labelled keypoints;
    evaluation (GT boxes) keeps every person with a labelled keypoint, like mmpose's test mode."""
    out = []
    for record in records:
        for ann in record["annotations"]:
            points = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
            if points.shape[0] != num_keypoints:
                raise DataFormatError(record["path"], f"{num_keypoints} keypoints per person",
                                      f"{points.shape[0]} in annotation {ann.get('id')}")
            if points[:, 2].max(initial=0) <= 0 or (train and ann.get("iscrowd", 0)):
                continue
            box = _valid_box(ann["bbox"], record["width"], record["height"])
            if box is None:
                continue
            out.append({"image_id": record["image_id"], "path": record["path"], "bbox": box,
                        "bbox_score": 1.0, "keypoints": points, "width": record["width"],
                        "height": record["height"], "area": float(ann.get("area", 0.0))})
    return out


def detected_instances(
    records: Sequence[dict[str, Any]], detection_file: str | Path, num_keypoints: int, score_threshold: float
) -> list[dict[str, Any]]:
    """Person boxes from a COCO detection results file (``[{image_id, category_id, bbox, score}]``)."""
    path = Path(detection_file)
    try:
        detections = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataFormatError(path, "a COCO person detection results JSON", "nothing at that path") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFormatError(path, "a COCO person detection results JSON", str(exc)) from exc
    if not isinstance(detections, list):
        raise DataFormatError(path, "a JSON list of detections", type(detections).__name__)
    by_image = {r["image_id"]: r for r in records}
    out = []
    for index, det in enumerate(detections):
        if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= set(det):
            raise DataFormatError(path, "detections with image_id, bbox, score", f"entry {index}")
        record = by_image.get(det["image_id"])
        if record is None or det.get("category_id", 1) != 1 or det["score"] < score_threshold:
            continue
        box = _valid_box(det["bbox"], record["width"], record["height"])
        if box is None:
            continue
        out.append({"image_id": record["image_id"], "path": record["path"], "bbox": box,
                    "bbox_score": float(det["score"]), "keypoints": np.zeros((num_keypoints, 3), np.float32),
                    "width": record["width"], "height": record["height"], "area": box[2] * box[3]})
    return out


# ---- crops -----------------------------------------------------------------------------------------

class TopDownPipeline:
    """mmpose transforms on one instance: box -> centre/scale (padding 1.25) -> [flip, half body,
    random scale/rotation/shift] -> affine crop (UDP or not) -> [heatmap target].

    ``compact`` (training only): no heatmaps; the sample carries the crop as uint8 (3, H, W), the
    keypoints in the codec's heatmap coordinates (``points``, (K, 2) float32) and their visibility
    (``visible``, (K,)), for ``heatmap_targets.render_heatmaps`` on the device. Why: the float image and
    K x h x w float heatmaps were most of what a fine-tune step waited for (about 1.1 GB per whole-body
    batch of 512 through the loader); the compact sample is ~150 KB and skips mmpose's per-keypoint loop.
    The transforms and their random draws are the same, so a seed gives the same crops either way."""

    def __init__(self, meta: PoseMeta, input_hw: tuple[int, int], codec: dict[str, Any], train: bool,
                 augment: bool, compact: bool = False) -> None:
        from mmpose.datasets.transforms import (
            GenerateTarget,
            GetBBoxCenterScale,
            RandomBBoxTransform,
            RandomFlip,
            RandomHalfBody,
            TopdownAffine,
        )

        if compact and not train:
            raise ValueError("compact samples carry training keypoints; prediction crops have none")
        self.meta = meta
        self.train = train
        self.compact = compact
        self.codec = dict(codec)
        use_udp = codec["type"] == "UDPHeatmap"
        self.use_udp = use_udp
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        steps: list[Any] = [GetBBoxCenterScale(padding=1.25)]
        if augment:
            steps += [RandomFlip(direction="horizontal"), RandomHalfBody(), RandomBBoxTransform()]
        steps.append(TopdownAffine(input_size=(input_hw[1], input_hw[0]), use_udp=use_udp))
        if train and not compact:
            steps.append(GenerateTarget(encoder=dict(codec)))
        self.steps = steps

    def __call__(
        self, instance: dict[str, Any], image: np.ndarray | None, seed: int | None = None,
        image_hw: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """One sample. ``image=None`` (compact only) runs the same transforms on no pixels for a photo of
        ``image_hw``: the sample then carries the crop's forward warp (``matrix``, 2 x 3) and ``flip`` in
        place of ``image``, for ``device_crops.warp_crops`` (mmpose's warp of an empty image list is a
        no-op, so the geometry, keypoints and random draws are those of the pixel path)."""
        if image is None and not (self.compact and image_hw is not None):
            raise ValueError("a sample without pixels needs compact=True and the photo's image_hw")
        x, y, w, h = instance["bbox"]
        points = instance["keypoints"]
        results = {
            "img": [] if image is None else image,
            "img_shape": tuple(image_hw) if image is None else image.shape[:2],
            "bbox": np.array([[x, y, x + w, y + h]], dtype=np.float32),
            "bbox_score": np.array([instance["bbox_score"]], dtype=np.float32),
            "keypoints": points[None, :, :2].astype(np.float32),
            "keypoints_visible": (points[None, :, 2] > 0).astype(np.float32),
            "flip_indices": self.meta.flip_indices,
            "upper_body_ids": self.meta.upper_body_ids, "lower_body_ids": self.meta.lower_body_ids,
        }
        state = None
        if seed is not None:  # mmpose's random transforms draw from numpy's global generator
            state = np.random.get_state()
            np.random.seed(seed % (2**32))
        try:
            for step in self.steps:
                results = step(results)
        finally:
            if state is not None:
                np.random.set_state(state)
        out: dict[str, Any] = {
            "center": np.asarray(results["input_center"], dtype=np.float64),
            "scale": np.asarray(results["input_scale"], dtype=np.float64),
        }
        if image is None:
            rotation = float(results["bbox_rotation"][0]) if "bbox_rotation" in results else 0.0
            out["matrix"] = torch.from_numpy(warp_matrix(out["center"], out["scale"], rotation,
                                                         (self.input_hw[1], self.input_hw[0]), self.use_udp))
            out["flip"] = torch.tensor(bool(results.get("flip", False)))
        else:
            crop = torch.from_numpy(np.ascontiguousarray(results["img"])).permute(2, 0, 1)
            out["image"] = crop if self.compact else crop.float() / 255.0
        if self.compact:
            points = to_heatmap_coordinates(results["transformed_keypoints"][0], self.codec)
            out["points"] = torch.from_numpy(np.ascontiguousarray(points))
            out["visible"] = torch.from_numpy(np.asarray(results["keypoints_visible"][0], dtype=np.float32))
        elif self.train:
            out["heatmaps"] = torch.from_numpy(np.asarray(results["heatmaps"], dtype=np.float32))
            out["weights"] = torch.from_numpy(np.asarray(results["keypoint_weights"], dtype=np.float32)[0])
        return out


# ---- test time -------------------------------------------------------------------------------------

def flip_back(heatmaps: torch.Tensor, flip_indices: Sequence[int], shift: bool) -> torch.Tensor:
    """Heatmaps of a mirrored crop -> heatmaps of the crop: swap left/right channels, mirror the width;
    ``shift`` moves them one pixel right (MSRA heatmaps, as mmpose's ``shift_heatmap``; not for UDP)."""
    flipped = heatmaps[:, list(flip_indices)].flip(-1)
    if shift:
        flipped = torch.cat([flipped[..., :1], flipped[..., :-1]], dim=-1)
    return flipped


def decode_to_image(
    codec: Any, heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray, input_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one instance's (K, h, w) heatmaps with the codec, then map crop -> image coordinates
    as mmpose's top-down estimator does. Returns (K, 2) points and (K,) scores."""
    with np.errstate(invalid="ignore", divide="ignore"):
        keypoints, scores = codec.decode(heatmaps)
    input_wh = np.array([input_hw[1], input_hw[0]], dtype=np.float64)
    points = keypoints[0] / input_wh * scale + center - 0.5 * scale
    scores = np.asarray(scores[0], dtype=np.float64)
    # An all-zero heatmap decodes to NaN in the UDP refinement; NaN coordinates would make every OKS of
    # that detection NaN (unmatchable), so place such points at the box centre with score 0.
    broken = ~np.isfinite(points).all(axis=1) | ~np.isfinite(scores)
    points[broken] = center
    scores[broken] = 0.0
    return points, scores


def rescore(keypoint_scores: np.ndarray, bbox_score: float, threshold: float = 0.2) -> float:
    """mmpose's ``bbox_keypoint`` score: box score x mean of the keypoint scores above ``threshold``."""
    confident = keypoint_scores[keypoint_scores > threshold]
    return float(bbox_score * confident.mean()) if confident.size else 0.0


def oks_nms_per_image(
    predictions: list[dict[str, Any]], sigmas: np.ndarray, threshold: float = 0.9
) -> list[dict[str, Any]]:
    """mmpose's OKS-NMS within each image (kept in score order); predictions carry ``_points`` (K, 3)."""
    from mmpose.evaluation.functional import oks_nms

    by_image: dict[int, list[dict[str, Any]]] = {}
    for prediction in predictions:
        by_image.setdefault(prediction["image_id"], []).append(prediction)
    kept: list[dict[str, Any]] = []
    for image_id in sorted(by_image):
        group = by_image[image_id]
        database = [{"keypoints": p["_points"], "score": p["score"], "area": p["_area"]} for p in group]
        keep = oks_nms(database, threshold, sigmas)
        kept.extend(group[int(i)] for i in keep)
    return kept
