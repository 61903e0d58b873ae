"""What a top-down pose fine-tune sample costs its loader worker, and what crosses the loader, before and
after the heatmap targets moved onto the device (``saip_bench/tasks/dense/heatmap_targets.py``).

Why: on an H200 the pose and whole-body fine-tunes (batch 512, 256x192) waited for data 96-97 % of every
step. The old sample is a float32 crop plus float32 K x 64 x 48 heatmaps built by mmpose's GenerateTarget
(a Python loop over the keypoints); the new one is the uint8 crop plus the keypoints in heatmap
coordinates and their visibility, the device rendering the batch's targets.

For COCO (17 points, UDP) and COCO-WholeBody (133 points, MSRA), both 256x192 / sigma 2 as their
fine-tune recipes, on synthetic 640x480 JPEG photos (smooth shading plus texture, so the decode costs what
a COCO photo's does) with one random person each, augmented as in training, it prints per sample: worker
milliseconds on one thread (JPEG decode, then the old and the new crop + target work, and mmpose's
encoder alone) and the bytes collated; per batch of 512: the megabytes crossing the loader and the
renderer's time on this machine's CPU (targets + uint8 -> float images); and DataLoader images/s at
batch 64 with 0 and 2 workers, decode included. A third way, ``device crops`` (``params.crops_on_device``,
``saip_bench/tasks/dense/device_crops.py``), leaves the photo undecoded: the worker reads its bytes and
header and runs the same transforms on no pixels; the sample is the JPEG file, the crop's warp matrix and
the keypoints. The decode and warp then run on the device; their CPU time here (per crop, batch of
``--loader-batch``) is only a reference: a GPU decodes with nvJPEG.

    OMP_NUM_THREADS=1 python benchmarks/pose_loader.py [--samples 64] [--loader-batches 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from saip_bench.devices import unit_float
from saip_bench.tasks.common import load_rgb, worker_batches
from saip_bench.tasks.dense.device_crops import decode_images, read_bytes, warp_crops
from saip_bench.tasks.dense.heatmap_targets import render_heatmaps
from saip_bench.tasks.dense.topdown import TopDownPipeline, build_codec, codec_config, pose_meta

INPUT_HW = (256, 192)
# (name, mmpose layout, the codec of its fine-tune recipe in tasks/pose/coco.yaml, tasks/wholebody/*.yaml)
LAYOUTS = [("COCO", "coco", "udp"), ("COCO-WholeBody", "coco_wholebody", "msra")]
OLD_FIELDS = ("image", "heatmaps", "weights")
NEW_FIELDS = ("image", "points", "visible")
DEVICE_FIELDS = ("matrix", "flip", "points", "visible")  # plus the JPEG file's bytes


def photo_hw(blob: torch.Tensor) -> tuple[int, int]:
    import io

    with Image.open(io.BytesIO(blob.numpy().tobytes())) as image:
        return image.height, image.width


def device_sample(pipeline: TopDownPipeline, path: Path, instance: dict[str, Any],
                  seed: int) -> dict[str, Any]:
    """What a worker hands over for a crop made on the device (as ``pose_task.device_crop_batches``)."""
    blob = read_bytes(path)
    sample = pipeline(instance, None, seed=seed, image_hw=photo_hw(blob))
    return {"blob": blob, **{k: sample[k] for k in DEVICE_FIELDS}}


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A smooth random image (low-resolution noise blown up bicubically) with fine noise on top."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize(size, Image.BICUBIC), dtype=np.float32)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8))


def person(seed: int, num_keypoints: int, size: tuple[int, int] = (640, 480)) -> dict[str, Any]:
    """One person box and its keypoints (80 % labelled, some near or past the box's edges)."""
    width, height = size
    rng = np.random.default_rng(seed)
    w, h = rng.uniform(0.2, 0.6) * width, rng.uniform(0.4, 0.9) * height
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    points = np.zeros((num_keypoints, 3), np.float32)
    points[:, 0] = rng.uniform(x - 0.05 * w, x + 1.05 * w, num_keypoints)
    points[:, 1] = rng.uniform(y - 0.05 * h, y + 1.05 * h, num_keypoints)
    points[:, 2] = np.where(rng.uniform(size=num_keypoints) < 0.8, 2, 0)
    return {"bbox": [x, y, w, h], "bbox_score": 1.0, "keypoints": points}


def collated_bytes(sample: dict[str, Any], fields: tuple[str, ...]) -> int:
    """Bytes of one sample's share of the collated batch."""
    return sum(int(sample[k].numel() * sample[k].element_size()) for k in fields)


def worker_costs(paths: list[Path], people: list[dict[str, Any]], old: TopDownPipeline,
                 new: TopDownPipeline, codec: dict[str, Any]) -> dict[str, float]:
    """Mean milliseconds per sample on this thread: decode, old and new crop + target work, the encoder,
    and the device-crop worker's whole work (read + header + transforms on no pixels)."""
    encoder = build_codec(codec)
    decode = old_ms = new_ms = encode = device_ms = 0.0
    for index, (path, instance) in enumerate(zip(paths, people, strict=True)):
        started = time.perf_counter()
        image = np.asarray(load_rgb(path))
        decode += time.perf_counter() - started
        started = time.perf_counter()
        old(instance, image, seed=index)
        old_ms += time.perf_counter() - started
        started = time.perf_counter()
        sample = new(instance, image, seed=index)
        new_ms += time.perf_counter() - started
        crop_points = sample["points"].numpy() * np.asarray(encoder.scale_factor)  # back to crop pixels
        started = time.perf_counter()
        encoder.encode(crop_points[None], sample["visible"].numpy()[None])
        encode += time.perf_counter() - started
        started = time.perf_counter()
        device_sample(new, path, instance, index)
        device_ms += time.perf_counter() - started
    n = len(paths)
    return {"decode_ms": 1e3 * decode / n, "old_ms": 1e3 * old_ms / n, "new_ms": 1e3 * new_ms / n,
            "encoder_ms": 1e3 * encode / n, "device_ms": 1e3 * device_ms / n}


def device_side_cost(samples: list[dict[str, Any]], paths: list[Path], repeats: int) -> float:
    """CPU milliseconds per crop (best of ``repeats``) to decode a batch's photos and warp its crops, the
    work ``crops_on_device`` gives the device."""
    blobs = [s["blob"] for s in samples]
    matrices = torch.stack([s["matrix"] for s in samples])
    flips = torch.stack([s["flip"] for s in samples])
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        warp_crops(decode_images(blobs, paths, "cpu"), matrices, flips, INPUT_HW)
        best = min(best, time.perf_counter() - started)
    return 1e3 * best / len(samples)


def render_cost(sample: dict[str, Any], codec: dict[str, Any], batch: int, repeats: int) -> dict[str, float]:
    """Milliseconds (best of ``repeats``) to render a batch's targets and turn its uint8 crops into floats,
    on this machine's CPU, from copies of one sample's keypoints (spread so windows land everywhere)."""
    rng = np.random.default_rng(0)
    width, height = codec["heatmap_size"]
    points = torch.from_numpy(rng.uniform(-4, [width + 4, height + 4], (batch, *sample["points"].shape))
                              .astype(np.float32))
    visible = sample["visible"].expand(batch, -1).contiguous()
    images = sample["image"].unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
    best_render = best_float = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        render_heatmaps(points, visible, codec)
        best_render = min(best_render, time.perf_counter() - started)
        started = time.perf_counter()
        unit_float(images)
        best_float = min(best_float, time.perf_counter() - started)
    return {"render_ms": 1e3 * best_render, "unit_float_ms": 1e3 * best_float}


def loader_rate(load: Callable[[int], dict[str, Any]], fields: tuple[str, ...], count: int, batch: int,
                batches: int, num_workers: int) -> float:
    """Images per second through a DataLoader (decode included), after its first batch (worker start)."""
    def collate(samples: list[dict[str, Any]]) -> tuple[Any, ...]:
        if "blob" in samples[0]:  # device crops: the files stay a list of byte tensors
            return ([s["blob"] for s in samples], *(torch.stack([s[k] for s in samples]) for k in fields))
        return tuple(torch.stack([s[k] for s in samples]) for k in fields)

    keys = [[(b * batch + i) % count for i in range(batch)] for b in range(batches + 1)]
    iterator = worker_batches(load, keys, collate, num_workers, "cpu")
    next(iterator)
    started = time.perf_counter()
    seen = sum(len(out[0]) for out in iterator)
    return seen / (time.perf_counter() - started)


def measure(name: str, layout: str, kind: str, paths: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    meta = pose_meta(layout)
    codec = codec_config(kind, INPUT_HW, 2.0)
    old = TopDownPipeline(meta, INPUT_HW, codec, train=True, augment=True)
    new = TopDownPipeline(meta, INPUT_HW, codec, train=True, augment=True, compact=True)
    people = [person(1000 + i, meta.num_keypoints) for i in range(len(paths))]
    image = np.asarray(load_rgb(paths[0]))
    old_bytes = collated_bytes(old(people[0], image, seed=0), OLD_FIELDS)
    sample = new(people[0], image, seed=0)
    new_bytes = collated_bytes(sample, NEW_FIELDS)
    row: dict[str, Any] = {"layout": name, "keypoints": meta.num_keypoints, "codec": codec["type"],
                           "old_bytes": old_bytes, "new_bytes": new_bytes,
                           "old_batch_mb": old_bytes * 512 / 1e6, "new_batch_mb": new_bytes * 512 / 1e6}
    device_samples = [device_sample(new, path, people[i], i) for i, path in enumerate(paths)]
    row["device_bytes"] = round(float(np.mean([collated_bytes(s, ("blob", *DEVICE_FIELDS))
                                               for s in device_samples])))
    row["device_batch_mb"] = row["device_bytes"] * 512 / 1e6
    row.update(worker_costs(paths, people, old, new, codec))
    row.update(render_cost(sample, codec, args.render_batch, args.repeats))
    batch = device_samples[:args.loader_batch]
    row["device_side_ms"] = device_side_cost(batch, paths[:len(batch)], args.repeats)

    def loader(pipeline: TopDownPipeline) -> Callable[[int], dict[str, Any]]:
        return lambda i: pipeline(people[i], np.asarray(load_rgb(paths[i])), seed=i)

    ways = (("old", loader(old), OLD_FIELDS), ("new", loader(new), NEW_FIELDS),
            ("device", lambda i: device_sample(new, paths[i], people[i], i), DEVICE_FIELDS))
    for workers in (0, 2):
        for label, load, fields in ways:
            row[f"{label}_loader_{workers}w"] = loader_rate(load, fields, len(paths), args.loader_batch,
                                                            args.loader_batches, workers)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64, help="distinct photos (one person each)")
    parser.add_argument("--render-batch", type=int, default=512, help="batch the renderer is timed on")
    parser.add_argument("--repeats", type=int, default=3, help="render timings (the best is kept)")
    parser.add_argument("--loader-batch", type=int, default=64)
    parser.add_argument("--loader-batches", type=int, default=6, help="timed batches after the first")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # the per-sample figures are one thread's, as in a loader worker
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.samples):
            paths.append(Path(folder) / f"{i}.jpg")
            photo(i).save(paths[-1], quality=90)
        rows = [measure(name, layout, kind, paths, args) for name, layout, kind in LAYOUTS]
    print(f"one thread; 640x480 JPEG q90 -> 256x192 crop, heatmaps 64x48 sigma 2; {args.samples} photos")
    print("| layout | K | codec | way | worker ms/sample (decode + crop/target) | bytes/sample | MB per 512 "
          "| loader img/s, 0 workers | 2 workers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for way in ("old", "new", "device"):
            decode, work = (0.0, r["device_ms"]) if way == "device" else (r["decode_ms"], r[f"{way}_ms"])
            label = "device crops" if way == "device" else way
            print(f"| {r['layout']} | {r['keypoints']} | {r['codec']} | {label} | {decode + work:.2f} "
                  f"({decode:.2f} + {work:.2f}) | {r[f'{way}_bytes']:,} | {r[f'{way}_batch_mb']:.1f} "
                  f"| {r[f'{way}_loader_0w']:.0f} | {r[f'{way}_loader_2w']:.0f} |")
    print()
    print(f"| layout | mmpose encoder ms/sample | render {args.render_batch} targets, CPU ms "
          f"| uint8 -> float {args.render_batch} crops, CPU ms | device crops: decode + warp, CPU ms/crop |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['encoder_ms']:.2f} | {r['render_ms']:.1f} | {r['unit_float_ms']:.1f} "
              f"| {r['device_side_ms']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
