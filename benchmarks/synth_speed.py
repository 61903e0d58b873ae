"""Generation speed of the synthetic world: images/s for person crops and for multi-person scenes.

    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py                    # crops + scenes, 1 and 2 processes
    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py --world default    # also time a whole world
    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py --seconds 1 --difficulty default  # ReID baselines

A *crop* is one 128x64 person crop as the ReID/PAR/pretrain exporters make it (background crop, one
person, sometimes a second one, camera model, JPEG encode). A *scene* is a 240x320 CrowdHuman-like image
with 4-14 people plus every label read back (part maps, boxes, keypoints) and a JPEG encode. Each figure
is images/s over ``--seconds`` of work per process; "2 proc" runs two processes side by side (2 cores).
Prints a markdown table; ``--json PATH`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _crop_worker(seconds: float, seed: int) -> int:
    from PIL import Image

    from saip_bench.data.synth.appearance import sample_appearance
    from saip_bench.data.synth.common import person_crop
    from saip_bench.data.synth.scene import make_background, make_camera

    rng = np.random.default_rng(seed)
    pool = [make_background(rng, 240, 320) for _ in range(8)]
    camera = make_camera(rng)
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        img, _ = person_crop(sample_appearance(rng), rng, (128, 64), pool, camera)
        Image.fromarray(img).save(io.BytesIO(), format="JPEG", quality=92)
        count += 1
    return count


def _scene_worker(seconds: float, seed: int) -> int:
    from PIL import Image

    from saip_bench.data.synth.common import crowd_scene
    from saip_bench.data.synth.io import mask_bbox, mask_polygons
    from saip_bench.data.synth.scene import apply_camera, make_background, make_camera

    rng = np.random.default_rng(seed)
    pool = [make_background(rng, 240, 320) for _ in range(8)]
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        scene, _ = crowd_scene(rng, (240, 320), pool, int(rng.integers(4, 15)), min_h=0.12, max_h=0.9)
        scene.lip_map()
        scene.cihp_map()
        for pi in range(len(scene.people)):
            mask = scene.body_mask(pi)
            mask_bbox(mask)
            mask_polygons(mask)
        image = apply_camera(scene.image, make_camera(rng), rng)
        Image.fromarray(image).save(io.BytesIO(), format="JPEG", quality=92)
        count += 1
    return count


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (robust to a loaded machine)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _rate(worker, seconds: float, processes: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second)."""
    worker(min(1.0, seconds), 999)  # warm-up (imports, caches)
    started, cpu = time.perf_counter(), _cpu_seconds()
    if processes == 1:
        n = worker(seconds, 0)
    else:
        context = mp.get_context("fork")
        with context.Pool(processes) as pool:
            n = sum(pool.starmap(worker, [(seconds, k) for k in range(processes)]))
    return n / (time.perf_counter() - started), n / max(1e-9, _cpu_seconds() - cpu)


def _hist_feature(hsv: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Hue-saturation histograms of 4 horizontal stripes (optionally only under ``mask``), sqrt + L2."""
    import cv2

    parts = []
    for stripe, stripe_mask in zip(np.array_split(hsv, 4, 0), np.array_split(mask, 4, 0), strict=True):
        h = cv2.calcHist([stripe], [0, 1], stripe_mask, [8, 4], [0, 180, 0, 256]).ravel()
        parts.append(h / (h.sum() + 1e-9))
    f = np.sqrt(np.concatenate(parts))
    return f / (np.linalg.norm(f) + 1e-9)


def difficulty(preset: str) -> dict:
    """How hard is synthetic ReID? A colour-histogram baseline on the exported Market-1501 (query vs
    gallery, same-camera matches excluded, junk dropped) and the same histogram restricted to the
    person's own pixels (an oracle mask) on freshly rendered crops (leave-one-out, 48 ids x 4 crops)."""
    import re

    import cv2

    from saip_bench.data.synth import generate_world
    from saip_bench.data.synth.appearance import sample_appearance
    from saip_bench.data.synth.common import cameras, main_person, person_crop
    from saip_bench.data.synth.scene import make_background

    def load(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats, pids, cams = [], [], []
        for path in sorted(folder.glob("*.jpg")):
            pid, cam = re.match(r"([-\d]+)_c(\d)", path.name).groups()
            if pid == "-1":
                continue
            hsv = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2HSV)
            feats.append(_hist_feature(hsv, np.ones(hsv.shape[:2], np.uint8)))
            pids.append(int(pid))
            cams.append(int(cam))
        return np.array(feats), np.array(pids), np.array(cams)

    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(
            Path(tmp) / "w", preset=preset, seed=0, datasets=["market1501"], contact_sheets=False
        )
        qf, qp, qc = load(world / "market1501" / "query")
        gf, gp, gc = load(world / "market1501" / "bounding_box_test")
    sim = qf @ gf.T
    rank1, aps = [], []
    for i in range(len(qf)):
        keep = ~((gp == qp[i]) & (gc == qc[i]))
        match = gp[keep][np.argsort(-sim[i][keep], kind="stable")] == qp[i]
        if match.any():
            hits = np.flatnonzero(match)
            rank1.append(match[0])
            aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
    rng = np.random.default_rng(0)
    pool = [make_background(rng, 240, 320) for _ in range(12)]
    cams = cameras(rng, 6)
    feats, pids = [], []
    for ident in range(48):
        a = sample_appearance(rng)
        for _ in range(4):
            img, scene = person_crop(a, rng, (128, 64), pool, cams[int(rng.integers(6))])
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            feats.append(_hist_feature(hsv, scene.body_mask(main_person(scene)).astype(np.uint8)))
            pids.append(ident)
    f, pids = np.array(feats), np.array(pids)
    s = f @ f.T
    np.fill_diagonal(s, -9)
    return {
        "market_queries": len(rank1),
        "market_gallery": len(gp),
        "hist_rank1": round(100 * float(np.mean(rank1)), 1),
        "hist_mAP": round(100 * float(np.mean(aps)), 1),
        "oracle_mask_rank1": round(100 * float(np.mean(pids[s.argmax(1)] == pids)), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="work per measurement and process")
    parser.add_argument("--world", default=None, help="also time generate_world with this preset")
    parser.add_argument("--difficulty", default=None, help="also score trivial ReID baselines on this preset")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    import saip_bench  # noqa: F401  (torchvision shim first, as everywhere)

    rows = []
    for kind, worker in (("person crop 128x64", _crop_worker), ("scene 240x320, 4-14 people", _scene_worker)):
        for processes in (1, 2):
            wall, cpu = _rate(worker, args.seconds, processes)
            rows.append(
                {
                    "what": kind,
                    "processes": processes,
                    "images_per_s": round(wall, 1),
                    "images_per_cpu_s": round(cpu, 1),
                }
            )
    world = None
    if args.world:
        from saip_bench.data.synth import generate_world

        with tempfile.TemporaryDirectory() as tmp:
            started, cpu = time.perf_counter(), _cpu_seconds()
            generate_world(Path(tmp) / "world", preset=args.world, seed=0, contact_sheets=False)
            seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
            state = json.loads((Path(tmp) / "world" / ".world.json").read_text())
            world = {
                "preset": args.world,
                "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu, 1),
                "per_dataset_seconds": {k: v["seconds"] for k, v in state["datasets"].items()},
            }
    hard = difficulty(args.difficulty) if args.difficulty else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("\n| what | processes | images/s (wall) | images per CPU-second |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['processes']} | {row['images_per_s']} | {row['images_per_cpu_s']} |")
    if world:
        print(
            f"\ngenerate_world(preset={world['preset']!r}): {world['seconds']} s wall, "
            f"{world['cpu_seconds']} CPU-s (idle 2 cores: about CPU-s / 2)"
        )
    if hard:
        print(
            f"\nReID difficulty ({args.difficulty}): colour histogram rank-1 {hard['hist_rank1']} % / mAP "
            f"{hard['hist_mAP']} % ({hard['market_queries']} queries, {hard['market_gallery']} gallery); "
            f"same histogram on the person's own pixels (oracle mask) rank-1 {hard['oracle_mask_rank1']} %"
        )
    print(f"\n(load average during the run: {load:.1f} on {os.cpu_count()} CPUs)")
    if args.json is None:
        return 0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "rows": rows,
                "world": world,
                "load_average": load,
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "machine": platform.machine(),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
