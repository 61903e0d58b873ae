"""What one fine-tune training sample costs a DataLoader worker, for each of the 12 datasets, and how many
workers it would take to feed the step rate the H200 computed at (issue 20: data wait < 10 % of a step).

Why: the H200 run (benchmarks/results/gpu/gpu_check_h200.json) had every fine-tune unit waiting for data;
since then the loaders changed (one loader per fit, device-made pose crops and targets, uint8 parsing
crops). Whether 14 workers can keep up is a per-sample cost times a rate, so this measures the cost.

The sample loading is the task's own: each dataset's ``finetune`` protocol runs through ``Task.run`` as
``benchmarks/gpu_check.py`` runs it (``finetune_row``: the spec's input size and batch, ViT-Tiny, the
``gpu_check`` synthetic world with ``large``'s image sizes), and ``common.worker_batches`` is patched to
hand back the ``load`` and ``collate`` callables and the key batches the fit gives its DataLoader
(``common.epoch_batches`` / ``image_epoch_batches``), then stop the fit before a step. Those callables
are timed here in the main process on one thread (what one worker does): ms per sample of ``load``,
ms per batch of ``collate`` over the batch size (a DataLoader runs ``collate_fn`` in the worker too), and
the bytes a sample adds to the collated batch (every tensor's ``nbytes``; what crosses worker shared
memory, pinning and the host-to-device copy); the fastest of ``--repeats`` passes is kept (a shared
machine's other jobs only add time). Pose and whole-body: both ways, ``params.crops_on_device``
false (the worker decodes and warps) and true (the worker reads bytes + header, runs the geometry; the
device decodes and warps, timed here on this CPU only as a reference: on a GPU it is device work, nvJPEG).
The pose worker's 16-photo decode cache is cleared before every sample: on COCO (64k photos, random
order) it almost never hits, on a small synthetic world it would.

Workers needed for < 10 % data wait, with the H200's step rate R = images/s / (1 - data-wait share)
(the rate the step computed at when not waiting) and t = the worker's seconds per sample (load + collate):
    workers = ceil(R * t / 0.9)
This assumes perfect scaling over workers (no contention for cores, memory bandwidth or the GIL) and
ignores the main process's share (pinning, the copy, any per-batch work of the fit's batch generator).
A loader-bound step waits 1 - W / (R * t) of its time, so W > 0.9 * R * t is the bare bound; the formula
above keeps 1/0.81 ~ 1.23x of headroom over it (both are in the JSON).

    OMP_NUM_THREADS=1 python benchmarks/finetune_loader.py [--datasets coco lip] [--samples 256]
        [--repeats 3] [--world W] [--json benchmarks/results/finetune_loader.json] [--profile]
    python benchmarks/finetune_loader.py --quick --world TINY_WORLD --datasets market1501   # the test
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import saip_bench  # noqa: E402, F401  (torchvision shim before timm)

DATASETS = ("market1501", "msmt17", "cuhk_pedes", "icfg_pedes", "pa100k", "peta", "coco", "coco_wholebody",
            "lip", "cihp", "crowdhuman", "fashionpedia")
POSE_DATASETS = ("coco", "coco_wholebody")  # measured both ways (crops in the worker, crops on the device)
H200_JSON = REPO / "benchmarks" / "results" / "gpu" / "gpu_check_h200.json"
H200_WORKERS = 14  # the H200 run's DataLoader workers (16 cores less 2)
WAIT_TARGET = 0.10  # issue 20: data wait < 10 % of step time
FORMULA = ("workers = ceil(R * t / 0.9), R = H200 images/s / (1 - H200 data-wait share), "
           "t = load + collate s/sample")


class Captured(BaseException):
    """Raised by the patched ``worker_batches`` to stop a fit before its first step, carrying what the
    fit handed its DataLoader. A BaseException so that no ``except Exception`` on the way swallows it."""

    def __init__(self, load: Callable[[Any], Any], key_batches: Iterator[list[Any]],
                 collate: Callable[[list[Any]], Any]) -> None:
        super().__init__("loader captured")
        self.load, self.key_batches, self.collate = load, key_batches, collate


@dataclass
class Loader:
    """One unit's training sample loading as its fit builds it."""

    key: str  # the spec key, e.g. pose/coco
    way: str  # "" or, for pose: "worker crops" / "device crops"
    input_hw: tuple[int, int]
    batch: int  # the spec's batch size
    load: Callable[[Any], Any]
    collate: Callable[[list[Any]], Any]
    key_batches: Iterator[list[Any]]

    def keys(self, count: int) -> list[list[Any]]:
        """The next ``count`` keys in the fit's order, grouped as its key batches."""
        batches, total = [], 0
        while total < count:
            keys = list(next(self.key_batches))[: count - total]
            batches.append(keys)
            total += len(keys)
        return batches


def capture(spec: Any, args: argparse.Namespace, world: Path, out: Path, way: str = "") -> Loader:
    """The unit's ``load``/``collate``/key batches, from its own fit (``gpu_check.finetune_row``)."""
    from gpu_check import finetune_row

    from saip_bench.tasks import common
    from saip_bench.tasks.dense.features import input_size

    def stop(load: Callable[[Any], Any], key_batches: Any, collate: Callable[[list[Any]], Any],
             *rest: Any, **kwargs: Any) -> Iterator[Any]:
        raise Captured(load, iter(key_batches), collate)

    spec = spec.model_copy(deep=True)
    if way:
        spec.protocols[args.protocol].params["crops_on_device"] = way == "device crops"
    row_args = argparse.Namespace(protocol=args.protocol, warmup_ft=0, ft_steps=1, quick=args.quick,
                                  backbone=args.backbone, device="cpu", fp32=True, workers=0, compile=False)
    with mock.patch.object(common, "worker_batches", stop):
        try:
            finetune_row(spec, row_args, world, out)
        except Captured as captured:
            from gpu_check import finetune_spec

            sized = finetune_spec(spec, row_args)  # the batch and input size the fit ran with
            return Loader(spec.key, way, input_size(sized, args.protocol),
                          sized.protocols[args.protocol].schedule.batch_size,
                          captured.load, captured.collate, captured.key_batches)
    raise RuntimeError(f"{spec.key}: its fit never built a loader through common.worker_batches")


def cold_caches() -> None:
    """Forget the pose worker's decoded photos (``pose_task._image_array``, 16 per process)."""
    from saip_bench.tasks.dense.pose_task import _image_array

    _image_array.cache_clear()


def batch_bytes(batch: Any) -> int:
    from saip_bench.devices import tensors_in

    return sum(t.numel() * t.element_size() for t in tensors_in(batch))


def device_side_ms(loader: Loader, batch: dict[str, Any]) -> float:
    """CPU ms per crop to decode a device-crop batch's photos and warp its crops (``device_crops``, the work
    ``device_crop_batches`` gives the device before each step), on this machine's CPU."""
    from saip_bench.tasks.dense.device_crops import decode_images, warp_crops

    names = [f"sample {i}" for i in batch["indices"]]  # only used to name a file that fails to decode
    started = time.perf_counter()
    warp_crops(decode_images(batch["blobs"], names, "cpu"), batch["matrix"], batch["flip"], loader.input_hw)
    return 1e3 * (time.perf_counter() - started) / len(batch["blobs"])


def timed_pass(loader: Loader, samples: int) -> dict[str, Any]:
    """One pass over the next ``samples`` keys: each load timed alone, then each key batch's collate."""
    load_s: list[float] = []
    collate_s = 0.0
    nbytes = 0
    device_ms = 0.0
    largest = 0
    for keys in loader.keys(samples):
        largest = max(largest, len(keys))
        loaded = []
        for key in keys:
            cold_caches()
            started = time.perf_counter()
            loaded.append(loader.load(key))
            load_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        batch = loader.collate(loaded)
        collate_s += time.perf_counter() - started
        nbytes += batch_bytes(batch)
        if loader.way == "device crops":
            device_ms += device_side_ms(loader, batch) * len(loaded)
    count = len(load_s)
    load_ms, collate_ms = 1e3 * statistics.fmean(load_s), 1e3 * collate_s / count
    row = {"load_ms": round(load_ms, 3), "load_ms_median": round(1e3 * statistics.median(load_s), 3),
           "collate_ms": round(collate_ms, 3), "worker_ms": round(load_ms + collate_ms, 3),
           "bytes_per_sample": round(nbytes / count), "samples": count, "collate_batch": largest}
    if loader.way == "device crops":
        row["device_side_cpu_ms"] = round(device_ms / count, 3)
    return row


def measure(loader: Loader, samples: int, warmup: int, repeats: int) -> dict[str, Any]:
    """The fastest of ``repeats`` passes (by worker ms a sample): on a shared machine another process's
    burst only ever adds time, so the least-disturbed pass is the best estimate of the work itself. Every
    pass's worker ms is kept for the spread."""
    for keys in loader.keys(warmup):  # first calls: imports, pipelines, file cache
        batch = loader.collate([loader.load(k) for k in keys])
        if loader.way == "device crops":
            device_side_ms(loader, batch)
    passes = [timed_pass(loader, samples) for _ in range(repeats)]
    best = min(passes, key=lambda p: p["worker_ms"])
    best["worker_ms_passes"] = [p["worker_ms"] for p in passes]
    if loader.way == "device crops":
        best["device_side_cpu_ms"] = min(p["device_side_cpu_ms"] for p in passes)
    return best


def profile(loader: Loader, samples: int, top: int) -> dict[str, list[dict[str, Any]]]:
    """cProfile of ``samples`` worker samples (load + collate): the ``top`` functions by own time (the
    hotspots) and by cumulative time (the stages they sit in), each with its share of the profiled time.
    Shares are under the profiler, which inflates Python-level calls against C ones."""
    profiler = cProfile.Profile()
    for keys in loader.keys(samples):
        cold_caches()
        profiler.enable()
        loader.collate([loader.load(k) for k in keys])
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(path).name}:{line}({name})" if path != "~" else name
        rows.append({"function": where, "calls": calls, "own_ms_per_sample": 1e3 * own / samples,
                     "own_share": own / total, "cumulative_share": cumulative / total})
    def rounded(chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in chosen]

    own = sorted(rows, key=lambda r: -r["own_share"])[:top]
    here = Path(__file__).name  # this script's own frames (the loop calling load and collate)
    task_frames = [r for r in rows if not r["function"].startswith(here)]
    stages = sorted(task_frames, key=lambda r: -r["cumulative_share"])
    return {"own": rounded(own), "cumulative": rounded(stages[:top])}


def code_state() -> dict[str, Any]:
    """The commit measured and any uncommitted change to the package (the figures are that code's)."""
    import subprocess

    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "saip_bench", "benchmarks").splitlines()
             if line[3:] != "benchmarks/finetune_loader.py" and not line.startswith("??")]
    return {"revision": git("rev-parse", "HEAD").strip() or None, "uncommitted": dirty}


def h200_rows(path: Path) -> dict[str, dict[str, Any]]:
    report = json.loads(path.read_text())
    return {r["case"]: r for r in report.get("finetune", []) if r.get("status") == "ok"}


def verdict(row: dict[str, Any], h200: dict[str, Any] | None) -> None:
    """Adds the H200 compute rate and the workers it needs (``FORMULA``) to ``row``."""
    if not h200 or not h200.get("train_images_per_s"):
        row.update(h200_compute_rate=None, workers_needed=None, fits_in_14=None)
        return
    rate = h200["train_images_per_s"] / (1.0 - h200["data_wait_share"])
    seconds = row["worker_ms"] / 1e3
    row.update(
        h200_images_per_s=h200["train_images_per_s"], h200_data_wait=h200["data_wait_share"],
        h200_batch=h200.get("batch"), h200_input=h200.get("input_size"),
        h200_compute_rate=round(rate, 1),
        workers_needed=math.ceil(rate * seconds / (1.0 - WAIT_TARGET)),
        workers_bare_bound=math.ceil((1.0 - WAIT_TARGET) * rate * seconds),
        workers_at_1x=round(rate * seconds, 2),  # workers whose supply equals the compute rate
    )
    row["fits_in_14"] = row["workers_needed"] <= H200_WORKERS


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | input | batch | worker ms/sample (load + collate) | bytes/sample "
             "| H200 compute rate (img/s) | workers needed | fits in 14 |", "|---" * 8 + "|"]
    for r in rows:
        name = r["dataset"] + (f" ({r['way']})" if r["way"] else "")
        rate = "-" if r["h200_compute_rate"] is None else f"{r['h200_compute_rate']:,.0f}"
        need = "-" if r["workers_needed"] is None else str(r["workers_needed"])
        fits = "-" if r["fits_in_14"] is None else ("yes" if r["fits_in_14"] else "**no**")
        mismatch = "" if r.get("h200_batch") in (None, r["batch"]) else f" (H200: {r['h200_batch']})"
        lines.append(f"| {name} | {r['input']} | {r['batch']}{mismatch} | {r['worker_ms']:.2f} "
                     f"({r['load_ms']:.2f} + {r['collate_ms']:.2f}) | {r['bytes_per_sample']:,} | {rate} "
                     f"| {need} | {fits} |")
    device = [r for r in rows if "device_side_cpu_ms" in r]
    if device:
        each = ", ".join(f"{r['dataset']} {r['device_side_cpu_ms']:.2f} ms/crop" for r in device)
        lines += ["", "Device crops: the decode + warp that `device_crop_batches` does before each step, "
                  "timed on this CPU (on a GPU it is device work, nvJPEG + grid_sample, and fit_loop counts "
                  f"it as data wait): {each}"]
    return "\n".join(lines)


def print_profiles(profiles: dict[str, dict[str, list[dict[str, Any]]]], samples: int) -> None:
    for name, found in profiles.items():
        print(f"\nprofile: {name} ({samples} samples under cProfile; share of the profiled time)")
        print("  own time (hotspots):")
        for r in found["own"]:
            print(f"  {100 * r['own_share']:5.1f}%  {r['own_ms_per_sample']:7.3f} ms/sample  {r['function']}")
        print("  cumulative (stages):")
        for r in found["cumulative"]:
            print(f"  {100 * r['cumulative_share']:5.1f}%  {r['function']}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=None,
                        help=f"default: all 12 ({' '.join(DATASETS)})")
    parser.add_argument("--samples", type=int, default=None,
                        help="timed samples per dataset (default 256; --quick 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed samples first (default 4; quick 1)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed passes per row, the fastest kept (default 3; quick 1)")
    parser.add_argument("--world", type=Path, default=None,
                        help="synthetic world, generated there if missing (default runs/finetune_loader/"
                             "world_gpu_check; --quick: world_tiny)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--h200", type=Path, default=H200_JSON, help="the gpu_check JSON of the H200 run")
    parser.add_argument("--protocol", default="finetune")
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--quick", action="store_true",
                        help="tiny world, batch <= 4, each spec's CPU-sized input (the test)")
    parser.add_argument("--profile", nargs="?", const="unfit", default=None, choices=("unfit", "all"),
                        help="cProfile the worker sample of units that do not fit in 14 workers (or all)")
    parser.add_argument("--profile-samples", type=int, default=32)
    parser.add_argument("--top", type=int, default=12, help="functions listed per profile")
    args = parser.parse_args(argv)
    args.datasets = args.datasets or list(DATASETS)
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    args.samples = args.samples or (4 if args.quick else 256)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 4)
    args.repeats = max(1, args.repeats or (1 if args.quick else 3))
    preset = "tiny" if args.quick else "gpu_check"
    args.preset = preset
    args.world = args.world or REPO / "runs" / "finetune_loader" / f"world_{preset}"
    return args


def run(args: argparse.Namespace, world: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every asked dataset's rows (pose: both ways) and the profiles asked for."""
    from saip_bench.specs import all_task_specs

    specs = {s.dataset: s for s in all_task_specs().values() if args.protocol in s.protocols}
    h200 = h200_rows(args.h200) if args.h200 and args.h200.exists() else {}
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory(prefix="finetune-loader-") as tmp:
        for dataset in args.datasets:
            spec = specs[dataset]
            for way in (("worker crops", "device crops") if dataset in POSE_DATASETS else ("",)):
                print(f"{spec.key} {way}".rstrip(), file=sys.stderr, flush=True)
                loader = capture(spec, args, world, Path(tmp) / f"{dataset}{way.replace(' ', '_')}", way)
                row: dict[str, Any] = {"dataset": dataset, "case": spec.key, "way": way,
                                       "input": "x".join(map(str, loader.input_hw)), "batch": loader.batch}
                row.update(measure(loader, args.samples, args.warmup, args.repeats))
                verdict(row, h200.get(spec.key))
                rows.append(row)
                if args.profile == "all" or (args.profile == "unfit" and row["fits_in_14"] is False):
                    name = f"{dataset} ({way})" if way else dataset
                    profiles[name] = profile(loader, args.profile_samples, args.top)
    return rows, profiles


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import cv2
    import torch

    from saip_bench.data.synth import generate_world

    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # one loader worker's figures
    cv2.setNumThreads(1)
    try:
        started = time.perf_counter()
        generate_world(args.world, preset=args.preset, seed=0, datasets=args.datasets, contact_sheets=False)
        world_s = time.perf_counter() - started
        load_before = os.getloadavg()
        started = time.perf_counter()
        rows, profiles = run(args, args.world)
        measured_s = time.perf_counter() - started
    finally:  # a caller in the same process (the test) gets its thread settings back
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    h200 = args.h200.resolve()
    report = {
        "command": " ".join(["benchmarks/finetune_loader.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    "torch": torch.__version__, "threads": 1},
        "code": code_state(), "world": args.preset, "world_generation_s": round(world_s, 1),
        "measured_s": round(measured_s, 1), "samples": args.samples, "repeats": args.repeats,
        "quick": args.quick,
        "h200_source": str(h200.relative_to(REPO)) if h200.is_relative_to(REPO) else str(h200),
        "h200_workers": H200_WORKERS, "formula": FORMULA,
        "assumptions": "perfect scaling over workers; the main process's pinning, copy and per-batch work "
                       "left out; worker cost measured on this machine's CPU, one thread",
        "rows": rows, **({"profiles": profiles} if profiles else {}),
    }
    print(f"one thread; {args.preset} world; {args.samples} samples per pass, fastest of {args.repeats} "
          "passes; load average "
          f"{load_before[0]:.2f} before, {report['machine']['load_average_after'][0]:.2f} after")
    print(f"{FORMULA} (perfect scaling over workers; main-process pinning and copy left out)")
    print(markdown(rows))
    print_profiles(profiles, args.profile_samples)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
