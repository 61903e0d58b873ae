"""COCO person keypoints and COCO-WholeBody (docs/formats.md#coco-person-keypoints, #coco-wholebody).

One record per image listed in the annotation file, with its person annotations. Keypoints stay flat
``[x, y, v] * K`` as in the file; WholeBody's 133 points are the concatenation body 17 + foot 6 + face 68
+ left hand 21 + right hand 21 (face/hand visibilities stay floats, as in the file). Crowd and
``num_keypoints == 0`` annotations are kept (the metric ignores them; tasks filter for training), and
``meta['gt_files']`` points at the official JSONs so metrics score against the files themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saip_bench.data.readers.base import (
    DatasetReader,
    ReadContext,
    as_dict,
    as_float_list,
    as_int,
    as_list,
    join_path,
    load_json,
    make_splits,
)
from saip_bench.data.records import DatasetSplits, KeypointAnnotation, KeypointImageRecord
from saip_bench.data.vocab import COCO_KEYPOINTS
from saip_bench.errors import DataFormatError

COCO_SIGMAS = tuple(
    s / 10.0
    for s in (
        0.26,
        0.25,
        0.25,
        0.35,
        0.35,
        0.79,
        0.79,
        0.72,
        0.72,
        0.62,
        0.62,
        1.07,
        1.07,
        0.87,
        0.87,
        0.89,
        0.89,
    )
)
COCO_SKELETON = (
    (16, 14),
    (14, 12),
    (17, 15),
    (15, 13),
    (12, 13),
    (6, 12),
    (7, 13),
    (6, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (9, 11),
    (2, 3),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
)  # 1-based, as in the file
FOOT_KEYPOINTS = (
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
)
HAND_KEYPOINTS = (
    "hand_root",
    *(
        f"{finger}{k}"
        for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
        for k in range(1, 5)
    ),
)
FOOT_SIGMAS = (0.068, 0.066, 0.066, 0.092, 0.094, 0.094)
FACE_SIGMAS = (
    0.042,
    0.043,
    0.044,
    0.043,
    0.040,
    0.035,
    0.031,
    0.025,
    0.020,
    0.023,
    0.029,
    0.032,
    0.037,
    0.038,
    0.043,
    0.041,
    0.045,
    0.013,
    0.012,
    0.011,
    0.011,
    0.012,
    0.012,
    0.011,
    0.011,
    0.013,
    0.015,
    0.009,
    0.007,
    0.007,
    0.007,
    0.012,
    0.009,
    0.008,
    0.016,
    0.010,
    0.017,
    0.011,
    0.009,
    0.011,
    0.009,
    0.007,
    0.013,
    0.008,
    0.011,
    0.012,
    0.010,
    0.034,
    0.008,
    0.008,
    0.009,
    0.008,
    0.008,
    0.007,
    0.010,
    0.008,
    0.009,
    0.009,
    0.009,
    0.007,
    0.007,
    0.008,
    0.011,
    0.008,
    0.008,
    0.008,
    0.01,
    0.008,
)
HAND_SIGMAS = (
    0.029,
    0.022,
    0.035,
    0.037,
    0.047,
    0.026,
    0.025,
    0.024,
    0.035,
    0.018,
    0.024,
    0.022,
    0.026,
    0.017,
    0.021,
    0.021,
    0.032,
    0.02,
    0.019,
    0.022,
    0.031,
)
# (part, field in the annotation, number of points, validity flag), in the 133-point concatenation order.
WHOLEBODY_PARTS = (
    ("body", "keypoints", 17, None),
    ("foot", "foot_kpts", 6, "foot_valid"),
    ("face", "face_kpts", 68, "face_valid"),
    ("lefthand", "lefthand_kpts", 21, "lefthand_valid"),
    ("righthand", "righthand_kpts", 21, "righthand_valid"),
)
WHOLEBODY_BOXES = ("face_box", "lefthand_box", "righthand_box")
WHOLEBODY_SIGMAS = COCO_SIGMAS + FOOT_SIGMAS + FACE_SIGMAS + HAND_SIGMAS + HAND_SIGMAS
WHOLEBODY_KEYPOINTS = (
    COCO_KEYPOINTS
    + FOOT_KEYPOINTS
    + tuple(f"face_{i}" for i in range(68))
    + tuple(f"left_{n}" for n in HAND_KEYPOINTS)
    + tuple(f"right_{n}" for n in HAND_KEYPOINTS)
)


def part_slices() -> dict[str, tuple[int, int]]:
    """Keypoint index ranges of each whole-body part in the 133-point order (body 0:17 ... rhand 112:133)."""
    out, start = {}, 0
    for part, _, count, _ in WHOLEBODY_PARTS:
        out[part] = (start, start + count)
        start += count
    return out


def _image_entry(value: Any, where: str) -> dict[str, Any]:
    entry = as_dict(value, where, "an image", ("id", "file_name", "width", "height"))
    if not isinstance(entry["file_name"], str) or not entry["file_name"]:
        raise DataFormatError(where, "'file_name' as a string", repr(entry["file_name"]))
    for key in ("width", "height"):
        if as_int(entry[key], where, f"'{key}'") <= 0:
            raise DataFormatError(where, f"'{key}' > 0", repr(entry[key]))
    return entry


def _keypoints(value: Any, where: str, field: str, count: int, float_vis: bool) -> list[float]:
    points = as_float_list(value, where, f"'{field}'", 3 * count)
    allowed = None if float_vis else {0.0, 1.0, 2.0}
    for index in range(count):
        vis = points[3 * index + 2]
        if (allowed is not None and vis not in allowed) or vis < 0:
            want = "visibility >= 0" if float_vis else "visibility 0, 1 or 2"
            raise DataFormatError(where, f"'{field}' {want}", f"{vis} at point {index}")
    return points


def parse_keypoint_file(
    json_path: Path, image_dir: Path, wholebody: bool = False
) -> tuple[list[KeypointImageRecord], dict[str, Any]]:
    """Records of one COCO-style keypoint JSON, plus the file's categories (for names / skeleton)."""
    data = as_dict(
        load_json(json_path), json_path, "a COCO annotation file", ("images", "annotations", "categories")
    )
    categories = as_list(data["categories"], json_path, "'categories'")
    person = next((c for c in categories if isinstance(c, dict) and c.get("id") == 1), None)
    if person is None:
        raise DataFormatError(json_path, "a category with id 1 (person)", repr(categories)[:80])
    images: dict[int, KeypointImageRecord] = {}
    for index, value in enumerate(as_list(data["images"], json_path, "'images'")):
        entry = _image_entry(value, f"{json_path}: images[{index}]")
        image_id = as_int(entry["id"], f"{json_path}: images[{index}]", "'id'")
        if image_id in images:
            raise DataFormatError(
                f"{json_path}: images[{index}]", "unique image ids", f"duplicate id {image_id}"
            )
        images[image_id] = {
            "image_id": image_id,
            "path": join_path(image_dir, entry["file_name"]),
            "width": int(entry["width"]),
            "height": int(entry["height"]),
            "annotations": [],
        }
    required = ("id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox", "area", "iscrowd")
    for index, value in enumerate(as_list(data["annotations"], json_path, "'annotations'")):
        where = f"{json_path}: annotations[{index}]"
        entry = as_dict(value, where, "a keypoint annotation", required)
        image_id = as_int(entry["image_id"], where, "'image_id'")
        if image_id not in images:
            raise DataFormatError(where, "an 'image_id' listed in 'images'", str(image_id))
        category_id = as_int(entry["category_id"], where, "'category_id'")
        if category_id != 1:
            continue  # only persons carry keypoints
        annotation: KeypointAnnotation = {
            "id": as_int(entry["id"], where, "'id'"),
            "bbox": as_float_list(entry["bbox"], where, "'bbox'", 4),
            "keypoints": _keypoints(entry["keypoints"], where, "keypoints", 17, float_vis=False),
            "num_keypoints": as_int(entry["num_keypoints"], where, "'num_keypoints'"),
            "area": as_float_list([entry["area"]], where, "'area'", 1)[0],
            "iscrowd": as_int(entry["iscrowd"], where, "'iscrowd'"),
            "category_id": category_id,
        }
        if wholebody:
            _add_wholebody(annotation, entry, where)
        images[image_id]["annotations"].append(annotation)
    return list(images.values()), person


def _add_wholebody(annotation: KeypointAnnotation, entry: dict[str, Any], where: str) -> None:
    """Concatenate the 133 points and keep part validity and part boxes (zeros = absent)."""
    points = list(annotation["keypoints"])
    valid: dict[str, bool] = {}
    for part, field, count, flag in WHOLEBODY_PARTS[1:]:
        if field not in entry:
            raise DataFormatError(
                where, f"a COCO-WholeBody annotation with '{field}' ({count} x 3)", f"keys {sorted(entry)}"
            )
        # foot uses 0/1/2 like the body; face and hands carry float 0/1 flags (FORMATS §8).
        points += _keypoints(entry[field], where, field, count, float_vis=part != "foot")
        flag_value = entry.get(flag, False)
        if not isinstance(flag_value, (bool, int)):
            raise DataFormatError(where, f"'{flag}' as a bool", repr(flag_value))
        valid[part] = bool(flag_value)
    annotation["keypoints"] = points
    annotation["parts_valid"] = valid
    annotation["part_boxes"] = {
        box: as_float_list(entry.get(box, [0, 0, 0, 0]), where, f"'{box}'", 4) for box in WHOLEBODY_BOXES
    }


class CocoKeypointsReader(DatasetReader):
    name = "coco"
    annotation_pattern = "annotations/person_keypoints_{split}2017.json"
    wholebody = False
    splits_available = ("train", "val")

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        splits: dict[str, list] = {}
        gt_files: dict[str, str] = {}
        person: dict[str, Any] = {}
        for split in self.splits_available:
            json_path = root / self.annotation_pattern.format(split=split)
            records, person = parse_keypoint_file(json_path, root / f"{split}2017", wholebody=self.wholebody)
            splits[split] = records
            gt_files[split] = str(json_path)
        meta = self._meta(person, context)
        meta["gt_files"] = gt_files
        detections = root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
        if detections.exists():
            meta["detection_files"] = {"val": str(detections)}
        return make_splits(self.name, version, root, splits, meta)

    def _meta(self, person: dict[str, Any], context: ReadContext) -> dict[str, Any]:
        names = person.get("keypoints")
        if names is not None and list(names) != list(COCO_KEYPOINTS):
            context.warnings.append("the person category lists keypoint names other than the official 17")
        return {
            "keypoint_names": list(COCO_KEYPOINTS),
            "sigmas": list(COCO_SIGMAS),
            "skeleton": [list(pair) for pair in person.get("skeleton", COCO_SKELETON)],
            "num_keypoints": 17,
        }

    def dataset_counts(self, data: DatasetSplits) -> dict[str, int]:
        return {"keypoints": int(data.meta["num_keypoints"])}


class CocoWholeBodyReader(CocoKeypointsReader):
    name = "coco_wholebody"
    annotation_pattern = "annotations/coco_wholebody_{split}_v1.0.json"
    wholebody = True

    def _meta(self, person: dict[str, Any], context: ReadContext) -> dict[str, Any]:
        return {
            "keypoint_names": list(WHOLEBODY_KEYPOINTS),
            "sigmas": list(WHOLEBODY_SIGMAS),
            "part_slices": {k: list(v) for k, v in part_slices().items()},
            "skeleton": [list(pair) for pair in COCO_SKELETON],
            "num_keypoints": 133,
        }
