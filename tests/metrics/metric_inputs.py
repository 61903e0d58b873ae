"""Valid inputs for the 9 ``saip-bench metric`` commands, built from the tiny synthetic world's GT files.

Why: the input-validation tests and the fuzz test (tests/commands/test_metric_fuzz.py) start from an
input each command scores with exit 0 and break it one way at a time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

COCO_GT = "coco/annotations/person_keypoints_val2017.json"
WHOLEBODY_GT = "coco_wholebody/annotations/coco_wholebody_val_v1.0.json"
CROWDHUMAN_GT = "crowdhuman/annotation_val.odgt"
FASHIONPEDIA_GT = "fashionpedia/instances_attributes_val2020.json"
LIP_GT = "lip/TrainVal_parsing_annotations/val_segmentations"
CIHP_CATEGORIES = "cihp/Validation/Category_ids"
CIHP_INSTANCES = "cihp/Validation/Instance_ids"
WHOLEBODY_KEYS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def keypoint_results(world: Path, wholebody: bool = False) -> list[dict[str, Any]]:
    """GT as predictions (score 1), one result per annotated person."""
    gt = json.loads((world / (WHOLEBODY_GT if wholebody else COCO_GT)).read_text())
    keys = WHOLEBODY_KEYS if wholebody else ("keypoints",)
    return [
        {"image_id": a["image_id"], "category_id": 1, "score": 1.0, **{k: list(a[k]) for k in keys}}
        for a in gt["annotations"]
        if a["num_keypoints"] > 0 and not a["iscrowd"]
    ]


def crowdhuman_results(world: Path) -> list[dict[str, Any]]:
    """GT full boxes as detections with falling scores, plus one false positive per image."""
    out = []
    for line in (world / CROWDHUMAN_GT).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        with Image.open(world / "crowdhuman" / "Images" / f"{record['ID']}.jpg") as image:
            width, height = image.size
        boxes = [
            {"box": list(b["fbox"]), "score": 0.9 - 0.05 * i, "tag": 1}
            for i, b in enumerate(record["gtboxes"])
            if b["tag"] == "person"
        ]
        boxes.append({"box": [1.0, 1.0, 10.0, 20.0], "score": 0.3, "tag": 1})
        out.append({"ID": record["ID"], "height": height, "width": width, "dtboxes": boxes})
    return out


def write_odgt(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def fashionpedia_results(world: Path) -> list[dict[str, Any]]:
    """GT instances as detections: compressed-RLE masks, boxes, attributes, falling scores."""
    import pycocotools.mask as mask_utils

    from saip_bench.metrics.fashionpedia import load_ground_truth

    gt = load_ground_truth(world / FASHIONPEDIA_GT)
    out = []
    for index, ann in enumerate(gt.dataset["annotations"]):
        rle = gt.annToRLE(ann)
        counts = rle["counts"]
        out.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "attribute_ids": list(ann["attribute_ids"]),
                "score": round(1.0 - 0.01 * index, 4),
                "segmentation": {
                    "size": list(rle["size"]),
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                },
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            }
        )
    return out


def reid_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q_pids, g_pids = np.arange(4), np.repeat(np.arange(6), 2)
    return {
        "distmat": rng.uniform(0, 2, (4, 12)),
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": np.zeros(4, dtype=np.int64),
        "g_camids": np.tile([0, 1], 6),
    }


def reid_feature_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    arrays = reid_arrays(seed)
    del arrays["distmat"]
    rng = np.random.default_rng(seed)
    arrays["q_feats"] = rng.normal(size=(4, 8)).astype(np.float32)
    arrays["g_feats"] = rng.normal(size=(12, 8)).astype(np.float32)
    return arrays


def retrieval_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "similarity": rng.uniform(-1, 1, (6, 5)),
        "text_pids": np.array([0, 0, 1, 2, 3, 4]),
        "image_pids": np.arange(5),
    }


def attribute_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "probs": rng.uniform(0, 1, (8, 5)),
        "labels": rng.integers(0, 2, (8, 5)),
        "eval_idx": np.array([0, 1, 2, 4]),
    }


def copy_dir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def cihp_instance_predictions(world: Path, out: Path) -> Path:
    """GT instance-part maps as predictions: value k = k-th listed part, '<class> <score>' lines."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((world / CIHP_INSTANCES).glob("*.png")):
        instances = np.array(Image.open(path)).astype(np.int64)
        categories = np.array(Image.open(world / CIHP_CATEGORIES / path.name)).astype(np.int64)
        values = [int(v) for v in np.unique(instances) if v != 0]
        pred = np.zeros_like(instances, dtype=np.uint8)
        lines = []
        for k, value in enumerate(values, start=1):
            mask = instances == value
            under = categories[mask]
            under = under[(under > 0) & (under < 20)]
            if not under.size:
                continue
            pred[mask] = len(lines) + 1
            lines.append(f"{int(np.bincount(under).argmax())} {1.0 - 0.01 * k:.3f}")
        Image.fromarray(pred).save(out / path.name)
        (out / path.with_suffix(".txt").name).write_text("\n".join(lines) + "\n")
    return out
