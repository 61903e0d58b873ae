"""What the bootstrap 95% interval costs at MSMT17-scale ReID and COCO-scale keypoints (issue 26).

Why: intervals are computed for every unit of every run, so their cost must be small beside the metric.
The interval reuses the metric's own per-sample arrays (per-query rank/AP/INP; pycocotools' per-image
matches), so its cost depends on the number of *resampled units* (queries or images) and detections,
not on the gallery size: ReID is run at the full MSMT17 query count (11,659) against a reduced gallery
(the metric part, not the interval, would grow with the 82,161-image gallery: see metrics_speed.py).

    python benchmarks/bootstrap_cost.py                      # defaults below, 1000 resamples
    python benchmarks/bootstrap_cost.py --queries 3000 --gallery 20000 --images 1000

Prints a markdown table: metric time alone, interval time (inside the same call), units resampled.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from saip_bench.metrics import bootstrap
from saip_bench.metrics.keypoints import coco_keypoint_ap
from saip_bench.metrics.reid import evaluate_reid_features


def reid_case(queries: int, gallery: int, dim: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Features of ``queries`` x ``gallery`` images, 4 cameras, ~8 images per id, same-id features close."""
    rng = np.random.default_rng(seed)
    ids = max(1, gallery // 8)
    g_pids = rng.integers(0, ids, gallery)
    q_pids = rng.integers(0, ids, queries)
    centres = rng.normal(size=(ids, dim)).astype(np.float32)
    g = centres[g_pids] + 3.0 * rng.normal(size=(gallery, dim)).astype(np.float32)
    q = centres[q_pids] + 3.0 * rng.normal(size=(queries, dim)).astype(np.float32)
    return q, g, q_pids, g_pids, rng.integers(0, 4, queries), rng.integers(0, 4, gallery)


def keypoint_case(images: int, folder: Path, seed: int = 0) -> tuple[Path, list[dict]]:
    """COCO-like GT (1-3 people per image) and results (each person with noise + one false positive)."""
    rng = np.random.default_rng(seed)
    gt_images, annotations, results = [], [], []
    for image_id in range(1, images + 1):
        gt_images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, 400, 2)
            size = float(rng.uniform(40, 200))
            points = np.c_[x0 + rng.uniform(0, size, 17), y0 + rng.uniform(0, size, 17), np.full(17, 2)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "keypoints": points.reshape(-1).tolist(), "num_keypoints": 17,
                                "area": size * size, "bbox": [x0, y0, size, size], "iscrowd": 0})
            moved = points.copy()
            moved[:, :2] += rng.normal(0, size * 0.05, (17, 2))
            moved[:, 2] = 1.0
            results.append({"image_id": image_id, "category_id": 1, "keypoints": moved.reshape(-1).tolist(),
                            "score": float(rng.uniform(0.1, 1.0))})
        fake = np.c_[rng.uniform(0, 600, (17, 2)), np.ones(17)]
        results.append({"image_id": image_id, "category_id": 1, "keypoints": fake.reshape(-1).tolist(),
                        "score": float(rng.uniform(0.1, 1.0))})
    gt = {"images": gt_images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}
    path = folder / "gt.json"
    path.write_text(json.dumps(gt))
    return path, results


def timed(function, *args, resamples: int) -> tuple[float, float, bootstrap.Collector]:
    """(metric seconds alone, interval seconds inside a collecting call, the collector)."""
    start = time.perf_counter()
    function(*args)
    alone = time.perf_counter() - start
    with bootstrap.collecting(bootstrap.BootstrapConfig(resamples=resamples)) as collector:
        function(*args)
    return alone, collector.seconds, collector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES)
    parser.add_argument("--queries", type=int, default=11659, help="MSMT17 query count")
    parser.add_argument("--gallery", type=int, default=8000, help="reduced gallery (MSMT17: 82,161)")
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--images", type=int, default=5000, help="COCO val2017 image count")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    q, g, qp, gp, qc, gc = reid_case(args.queries, args.gallery, args.dim)
    alone, interval, collector = timed(evaluate_reid_features, q, g, qp, gp, qc, gc, resamples=args.resamples)
    low, high = collector.intervals["rank1"]
    rows.append((f"ReID {args.queries:,} queries x {args.gallery:,} gallery", f"{args.queries:,} queries",
                 alone, interval, f"rank1 [{low:.2f}, {high:.2f}]"))

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        gt_file, results = keypoint_case(args.images, Path(tmp))
        alone, interval, collector = timed(coco_keypoint_ap, gt_file, results, resamples=args.resamples)
    low, high = collector.intervals["AP"]
    rows.append((f"COCO keypoints, {args.images:,} images, {len(results):,} results",
                 f"{args.images:,} images", alone, interval, f"AP [{low:.4f}, {high:.4f}]"))

    print(f"bootstrap cost, {args.resamples} resamples, {torch.get_num_threads()} CPU thread(s)\n")
    print("| case | resampled | metric alone (s) | interval (s) | interval |")
    print("|---|---|---|---|---|")
    for case, units, metric_s, interval_s, text in rows:
        print(f"| {case} | {units} | {metric_s:.2f} | {interval_s:.2f} | {text} |")


if __name__ == "__main__":
    main()
