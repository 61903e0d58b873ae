"""Time the multi-person metrics at official validation scale on random predictions (time, peak RSS).

    OMP_NUM_THREADS=1 python benchmarks/metrics_speed_multi.py                 # full val scale
    OMP_NUM_THREADS=1 python benchmarks/metrics_speed_multi.py --scale 0.1     # 10 % of the images

- COCO keypoint OKS AP (``saip_bench.metrics.keypoints.coco_keypoint_ap``: pycocotools COCOeval) at
  val2017 scale: 5,000 images, 11,004 person annotations (about 58 % with visible keypoints, 1 % crowd
  regions) and 100 detections per image (COCOeval keeps the 20 best per image, maxDets 20).
- CrowdHuman AP / MR^-2 / JI (``saip_bench.metrics.crowdhuman``) at val scale: 4,370 images with
  99,481 full-body boxes (about 23 per image; 3 % ignore regions) and 50 detections per image.

Detections are noisy copies of GT (70 %) or uniform random boxes/keypoints (30 %), scores uniform:
the evaluators do the same amount of matching work as on a real model's output. Inputs are written as
JSON/odgt files in a temp dir by a writer subprocess (seeded); each metric then runs in a fresh subprocess
that reads those files, so its time includes parsing as the CLI pays it and its peak RSS (``ru_maxrss``)
is its own (the interpreter with saip_bench imported is reported as the baseline).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COCO_VAL = {"images": 5_000, "annotations": 11_004, "dets_per_image": 100}
CROWDHUMAN_VAL = {"images": 4_370, "boxes": 99_481, "dets_per_image": 50}


# ------------------------------------------------------------------------------------------ COCO keypoints
def _random_person(rng: np.random.Generator, width: int, height: int) -> tuple[list[float], np.ndarray]:
    w = float(rng.uniform(20, width / 2))
    h = float(rng.uniform(40, height * 0.9))
    x = float(rng.uniform(0, width - w))
    y = float(rng.uniform(0, height - h))
    points = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17)], axis=1)
    return [x, y, w, h], points


def write_coco(folder: Path, scale: float, seed: int) -> dict:
    """Synthetic val2017-sized GT + results files; returns their paths and counts."""
    rng = np.random.default_rng(seed)
    n_images = max(1, round(COCO_VAL["images"] * scale))
    n_anns = max(1, round(COCO_VAL["annotations"] * scale))
    owner = rng.integers(0, n_images, n_anns)
    images, annotations, results = [], [], []
    gt_by_image: dict[int, list[tuple[list[float], np.ndarray]]] = {}
    for index in range(n_images):
        images.append({"id": index + 1, "width": 640, "height": 480, "file_name": f"{index + 1:012d}.jpg"})
    for ann_id, image_index in enumerate(owner.tolist(), start=1):
        box, points = _random_person(rng, 640, 480)
        crowd = bool(rng.random() < 0.01)
        visible = (rng.random(17) < 0.6) & (rng.random() < 0.58) & (not crowd)
        keypoints = np.zeros((17, 3))
        keypoints[visible, :2] = points[visible]
        keypoints[visible, 2] = 2
        annotations.append({
            "id": ann_id, "image_id": image_index + 1, "category_id": 1, "iscrowd": int(crowd),
            "bbox": box, "area": box[2] * box[3] * 0.6, "num_keypoints": int(visible.sum()),
            "keypoints": keypoints.round(2).reshape(-1).tolist(),
        })
        gt_by_image.setdefault(image_index + 1, []).append((box, points))
    for image_id in range(1, n_images + 1):
        persons = gt_by_image.get(image_id, [])
        for _ in range(COCO_VAL["dets_per_image"]):
            if persons and rng.random() < 0.7:
                box, points = persons[int(rng.integers(len(persons)))]
                points = points + rng.normal(scale=0.05 * max(box[2], box[3]), size=points.shape)
            else:
                _, points = _random_person(rng, 640, 480)
            flat = np.concatenate([points, rng.uniform(0, 1, (17, 1))], axis=1).round(2)
            results.append({"image_id": image_id, "category_id": 1, "keypoints": flat.reshape(-1).tolist(),
                            "score": round(float(rng.random()), 4)})
    gt_path, dt_path = folder / "person_keypoints_val.json", folder / "keypoint_results.json"
    categories = [{"id": 1, "name": "person", "supercategory": "person",
                   "keypoints": [f"k{i}" for i in range(17)], "skeleton": []}]
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    dt_path.write_text(json.dumps(results))
    return {"gt": str(gt_path), "pred": str(dt_path), "images": n_images, "annotations": n_anns,
            "detections": len(results)}


def run_coco(files: dict) -> dict:
    import saip_bench  # noqa: F401
    from saip_bench.metrics.keypoints import coco_keypoint_ap

    baseline = _rss_mib()
    started = time.perf_counter()
    scores = coco_keypoint_ap(files["gt"], files["pred"])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "baseline_rss_mib": baseline,
            "note": f"AP {100 * scores['AP']:.1f}, AR {100 * scores['AR']:.1f}"}


# --------------------------------------------------------------------------------------------- CrowdHuman
def _xywh(rng: np.random.Generator, width: int, height: int) -> list[float]:
    w = float(rng.uniform(10, width / 4))
    h = float(min(rng.uniform(2.0, 3.0) * w, height - 1))
    return [float(rng.uniform(-0.05 * width, width - w)), float(rng.uniform(0, height - h)), w, h]


def write_crowdhuman(folder: Path, scale: float, seed: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    n_images = max(1, round(CROWDHUMAN_VAL["images"] * scale))
    n_boxes = max(1, round(CROWDHUMAN_VAL["boxes"] * scale))
    counts = np.bincount(rng.integers(0, n_images, n_boxes), minlength=n_images)
    gt_lines, dt_lines = [], []
    total_dets = 0
    for index, count in enumerate(counts.tolist()):
        width, height = int(rng.integers(600, 1400)), int(rng.integers(400, 1000))
        boxes = [_xywh(rng, width, height) for _ in range(count)]
        gtboxes = []
        for box in boxes:
            ignore = rng.random() < 0.03
            gtboxes.append({"tag": "mask" if ignore else "person", "fbox": [round(v, 1) for v in box],
                            "extra": {"ignore": int(ignore)}})
        dtboxes = []
        for _ in range(CROWDHUMAN_VAL["dets_per_image"]):
            if boxes and rng.random() < 0.7:
                x, y, w, h = boxes[int(rng.integers(len(boxes)))]
                x, y = x + rng.normal(scale=0.1 * w), y + rng.normal(scale=0.1 * h)
                w, h = w * float(np.exp(rng.normal(scale=0.1))), h * float(np.exp(rng.normal(scale=0.1)))
                box = [float(x), float(y), w, h]
            else:
                box = _xywh(rng, width, height)
            dtboxes.append({"box": [round(v, 1) for v in box], "score": round(float(rng.random()), 4),
                            "tag": 1})
        total_dets += len(dtboxes)
        image_id = f"synthetic_{index:06d}"
        gt_lines.append(json.dumps({"ID": image_id, "gtboxes": gtboxes}))
        dt_lines.append(json.dumps({"ID": image_id, "height": height, "width": width, "dtboxes": dtboxes}))
    gt_path, dt_path = folder / "annotation_val.odgt", folder / "results.odgt"
    gt_path.write_text("\n".join(gt_lines) + "\n")
    dt_path.write_text("\n".join(dt_lines) + "\n")
    return {"gt": str(gt_path), "pred": str(dt_path), "images": n_images, "annotations": n_boxes,
            "detections": total_dets}


def run_crowdhuman(files: dict) -> dict:
    import saip_bench  # noqa: F401
    from saip_bench.metrics.crowdhuman import ap_mr, build_images, jaccard_index, read_odgt

    baseline = _rss_mib()
    started = time.perf_counter()
    images = build_images(read_odgt(files["gt"]), read_odgt(files["pred"]), files["gt"], files["pred"])
    loaded = time.perf_counter()
    scores = ap_mr(images)
    ap_done = time.perf_counter()
    scores.update(jaccard_index(images))
    done = time.perf_counter()
    return {"seconds": done - started, "baseline_rss_mib": baseline,
            "parts_s": {"read+clip": loaded - started, "AP+MR": ap_done - loaded, "JI (10 thresholds)":
                        done - ap_done},
            "note": f"AP {100 * scores['AP']:.1f}, MR {100 * scores['MR']:.1f}, JI {100 * scores['JI']:.1f}"}


# ---------------------------------------------------------------------------------------------- driver
def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CASES = {"coco_keypoints": (write_coco, run_coco), "crowdhuman": (write_crowdhuman, run_crowdhuman)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the val set's images/boxes")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/metrics_speed_multi.json"))
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        name, folder = args.write.split(":", 1)
        tic = time.perf_counter()
        files = CASES[name][0](Path(folder), args.scale, args.seed)
        files["write_s"] = time.perf_counter() - tic
        print(json.dumps(files))
        return
    if args.case:
        name, files = args.case.split(":", 1)
        result = CASES[name][1](json.loads(files))
        result["peak_rss_mib"] = _rss_mib()
        print(json.dumps(result))
        return
    rows = []
    print("| metric | scale | images | GT | detections | seconds | peak RSS MiB (baseline) | note |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            # inputs are written by their own process: a child's ru_maxrss starts at its parent's
            # RSS (Linux keeps it across exec), so this process must stay small
            writer = [sys.executable, __file__, "--write", f"{name}:{tmp}", "--scale", str(args.scale),
                      "--seed", str(args.seed)]
            written = subprocess.run(writer, check=True, capture_output=True, text=True).stdout
            files = json.loads(written.strip().splitlines()[-1])
            command = [sys.executable, __file__, "--case", f"{name}:{json.dumps(files)}"]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = {**files, **json.loads(output.strip().splitlines()[-1]), "metric": name,
                      "scale": args.scale}
            result.pop("gt"), result.pop("pred")
            rows.append(result)
            print(f"| {name} | {args.scale:g} | {files['images']} | {files['annotations']} | "
                  f"{files['detections']} | {result['seconds']:.1f} | {result['peak_rss_mib']:.0f} "
                  f"({result['baseline_rss_mib']:.0f}) | {result['note']} |", flush=True)
    for row in rows:
        if "parts_s" in row:
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in row["parts_s"].items())
            print(f"\n{row['metric']} parts: {parts}")
    meta = {"command": "python benchmarks/metrics_speed_multi.py " + " ".join(sys.argv[1:]),
            "python": platform.python_version(), "numpy": np.__version__}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
