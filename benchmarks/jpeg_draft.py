"""Decode + resize throughput of a full JPEG decode vs a draft decode (``saip_bench/data/jpeg.py``).

Why: a loader worker that decodes a 1920x1080 frame only to shrink it to 256x256 spends most of its time
in the inverse DCT of pixels it throws away; libjpeg can emit 1/2, 1/4 or 1/8 of the image instead. This
times both paths on synthetic JPEGs of realistic sizes (a full HD frame, a 640x480 COCO-sized photo, a
large and a typical person crop) in one process and one thread, in CPU seconds, and prints how far the
drafted pixels are from the full decode's (mean absolute difference, 0-255 scale).

    OMP_NUM_THREADS=1 python benchmarks/jpeg_draft.py [--repeats 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from saip_bench.data.jpeg import open_rgb

# (case, stored (width, height), target (width, height), where that target comes from)
CASES = [
    ("full HD frame", (1920, 1080), (256, 256), "SAIP canvas background (paper preset)"),
    ("full HD frame", (1920, 1080), (896, 504), "Fashionpedia finetune, long side 896"),
    ("COCO-sized photo", (640, 480), (256, 256), "background, paper preset"),
    ("COCO-sized photo", (640, 480), (128, 128), "background, quick preset"),
    ("large person crop", (512, 1024), (128, 256), "pretraining source, paper preset"),
    ("person crop", (128, 256), (128, 256), "pretraining source, paper preset"),
]


def synthetic_photo(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth shading, hard edges and fine texture, so the JPEG's size and decode cost are photo-like."""
    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    base = np.stack([xs / width, ys / height, 0.5 + 0.5 * np.sin(xs / 37.0 + ys / 53.0)], -1) * 200
    for _ in range(12):  # flat rectangles: edges
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        base[y0 : y0 + height // 5, x0 : x0 + width // 6] = rng.integers(0, 255, 3)
    base += rng.normal(0, 12, base.shape)  # sensor-like noise: texture the encoder has to keep
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def throughput(path: Path, target: tuple[int, int], draft: bool, repeats: int) -> tuple[float, np.ndarray]:
    """(images per CPU second, last result) of decode + bilinear resize to ``target``."""
    result = None
    started = time.process_time()
    for _ in range(repeats):
        decoded = open_rgb(path, target if draft else None)
        result = decoded.resize(target, Image.BILINEAR)
    elapsed = time.process_time() - started
    return repeats / elapsed, np.asarray(result, dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40, help="decodes per case and path")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the synthetic files")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for number, (case, stored, target, purpose) in enumerate(CASES):
            path = Path(folder) / f"{number}.jpg"
            synthetic_photo(stored, number).save(path, quality=args.quality)
            repeats = max(4, args.repeats * 640 * 480 // (stored[0] * stored[1]))  # ~same time per case
            throughput(path, target, True, 2)  # warm the file cache and PIL
            full_rate, full = throughput(path, target, False, repeats)
            draft_rate, drafted = throughput(path, target, True, repeats)
            rows.append({
                "case": case, "stored": list(stored), "target": list(target), "purpose": purpose,
                "reduction": open_rgb(path, target).reduction, "repeats": repeats,
                "full_images_per_cpu_s": round(full_rate, 1), "draft_images_per_cpu_s": round(draft_rate, 1),
                "speedup": round(draft_rate / full_rate, 2),
                "mean_abs_diff": round(float(np.abs(full - drafted).mean()), 2),
            })
    print("| image | stored WxH | target WxH | used for | draft | full img/CPU-s | draft img/CPU-s "
          "| speed-up "
          "| mean abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['stored'][0]}x{r['stored'][1]} | {r['target'][0]}x{r['target'][1]} | "
              f"{r['purpose']} | 1/{r['reduction']} | {r['full_images_per_cpu_s']} | "
              f"{r['draft_images_per_cpu_s']} | {r['speedup']}x | {r['mean_abs_diff']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
