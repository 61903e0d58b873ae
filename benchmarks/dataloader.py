"""Is the SAIP data loader the bottleneck? Loader images/s with N workers vs the training step.

Uses the real pretraining data path exactly as ``saip_bench.pretrain.trainer`` does: ``PretrainFolder.scan``
-> ``PretrainDataset`` (decode + resize once to ``source_size``, plus a background canvas image and the
per-sample seed) -> ``ResumableBatchSampler`` -> ``DataLoader(collate)`` -> ``images_to_float`` ->
``method.make_views`` (batched SAIP views in the main process) -> forward/backward (bf16 autocast when
the preset says ``amp``) -> AdamW step -> EMA update. Data: ``<world>/pretrain`` of the synthetic world
(generated once with ``generate_world(world, preset="tiny", seed=0)`` if missing).

Figures per preset:
- ``loader`` alone, per worker count: images/s after the first batch (worker start-up reported apart);
- ``views``: images/s of ``images_to_float`` + ``make_views`` alone (main process);
- ``model``: images/s of forward + backward + optimiser + EMA alone;
- ``end to end`` per worker count: the training loop with that loader, images/s and the share of the
  time spent waiting for the next batch (the loader is the bottleneck when that share is large).

    OMP_NUM_THREADS=1 python benchmarks/dataloader.py                       # quick preset, 0/1/2 workers
    OMP_NUM_THREADS=1 python benchmarks/dataloader.py --presets quick paper --paper-batch 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import saip_bench  # noqa: F401  (torchvision shim before timm)
from saip_bench.pretrain.api import build_method
from saip_bench.pretrain.data import (
    PretrainDataset,
    PretrainFolder,
    ResumableBatchSampler,
    collate,
    images_to_float,
)
from saip_bench.pretrain.trainer import _mix_seed, param_groups
from saip_bench.utils import autocast, console, seed_everything

SEED = 0


def ensure_world(world: Path) -> Path:
    """``<world>/pretrain``, generating the tiny synthetic world's pretraining folder once if missing."""
    root = world / "pretrain"
    if not (root / "images").is_dir():
        from saip_bench.data.synth import generate_world

        console.print(f"generating the synthetic pretraining folder into {root} (once)")
        generate_world(world, preset="tiny", seed=SEED, datasets=["pretrain"])
    return root


def make_loader(
    dataset: PretrainDataset, batch: int, workers: int, total: int, pin_memory: bool = False
) -> DataLoader:
    sampler = ResumableBatchSampler(len(dataset), batch, SEED, total=total)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def time_loader(dataset: PretrainDataset, batch: int, workers: int, batches: int) -> dict:
    """Images/s of the loader alone; the first batch (worker start-up) is timed apart."""
    started = time.perf_counter()
    iterator = iter(make_loader(dataset, batch, workers, batches + 1))
    next(iterator)
    first = time.perf_counter() - started
    tic = time.perf_counter()
    count = sum(int(item["image"].shape[0]) for item in iterator)
    elapsed = time.perf_counter() - tic
    return {"workers": workers, "images_per_s": count / elapsed, "first_batch_s": first}


def run_loop(
    method, optimizer, dataset, cfg, batch: int, workers: int, steps: int, warmup: int, device: torch.device
) -> dict:
    """The trainer's step loop with a real loader; times data wait, views and model apart per step."""
    loader = iter(make_loader(dataset, batch, workers, steps + warmup, pin_memory=device.type == "cuda"))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    waits, views_t, model_t, totals = [], [], [], []
    for step in range(steps + warmup):
        tic = time.perf_counter()
        batch_data = images_to_float(next(loader), device)
        sync()
        t_data = time.perf_counter()
        batch_data["step_seed"] = torch.tensor(_mix_seed(SEED, step, 0), dtype=torch.long)
        generator = torch.Generator().manual_seed(_mix_seed(SEED, step, 0, 0))
        with torch.no_grad():
            views = method.make_views(batch_data, generator)
        sync()
        t_views = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp):
            out = method(views)
        out["loss"].float().backward()
        optimizer.step()
        method.on_after_step(step + 1, 1000)
        sync()
        t_end = time.perf_counter()
        if step >= warmup:
            waits.append(t_data - tic)
            views_t.append(t_views - t_data)
            model_t.append(t_end - t_views)
            totals.append(t_end - tic)
    total = sum(totals)
    return {
        "workers": workers,
        "images_per_s": batch * len(totals) / total,
        "data_wait_share": sum(waits) / total,
        "views_images_per_s": batch / statistics.median(views_t),
        "model_images_per_s": batch / statistics.median(model_t),
    }


def bench_preset(args: argparse.Namespace, root: Path, preset: str, batch: int) -> dict:
    seed_everything(SEED)
    method, cfg = build_method("saip", args.backbone, preset)
    device = torch.device(args.device)
    method.to(device).train()
    folder = PretrainFolder.scan(root)
    dataset = PretrainDataset(
        folder,
        cfg.source_size,
        SEED,
        with_backgrounds=method.needs_backgrounds,
        background_size=cfg.background_size,
        with_labels=method.needs_labels,
        with_keypoints=method.needs_keypoints,
    )
    optimizer = torch.optim.AdamW(param_groups(method, cfg.weight_decay), lr=1e-4, betas=tuple(cfg.betas))
    loaders, loops = [], []
    for workers in args.workers:
        loaders.append(time_loader(dataset, batch, workers, args.loader_batches))
        console.print(f"  {preset} loader, {workers} workers: {loaders[-1]['images_per_s']:.0f} images/s")
    for workers in args.workers:
        loops.append(
            run_loop(method, optimizer, dataset, cfg, batch, workers, args.steps, args.warmup, device)
        )
        console.print(f"  {preset} train loop, {workers} workers: {loops[-1]['images_per_s']:.1f} images/s")
    views = statistics.median(loop["views_images_per_s"] for loop in loops)
    model = statistics.median(loop["model_images_per_s"] for loop in loops)
    return {
        "preset": preset,
        "batch": batch,
        "source_size": list(cfg.source_size),
        "amp_bf16": cfg.amp,
        "images_in_folder": len(dataset),
        "loader": loaders,
        "views_images_per_s": views,
        "model_images_per_s": model,
        "step_images_per_s": 1.0 / (1.0 / views + 1.0 / model),
        "train_loop": loops,
    }


def print_tables(results: list[dict]) -> None:
    print("| preset | batch | workers | loader img/s (start-up s) | train loop img/s | data-wait share |")
    print("|---|---|---|---|---|---|")
    for res in results:
        for loader, loop in zip(res["loader"], res["train_loop"], strict=True):
            print(
                f"| {res['preset']} | {res['batch']} | {loader['workers']} | {loader['images_per_s']:.0f} "
                f"({loader['first_batch_s']:.2f}) | {loop['images_per_s']:.1f} "
                f"| {100 * loop['data_wait_share']:.1f}% |"
            )
    print()
    print("| preset | view generation img/s | model fwd+bwd+opt img/s | step (views + model) img/s |")
    print("|---|---|---|---|")
    for res in results:
        print(
            f"| {res['preset']} | {res['views_images_per_s']:.1f} | {res['model_images_per_s']:.1f} "
            f"| {res['step_images_per_s']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, default=Path(".cache/world_tiny"))
    parser.add_argument("--presets", nargs="*", default=["quick"], choices=["quick", "paper"])
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--workers", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--quick-batch", type=int, default=16, help="the quick preset's batch")
    parser.add_argument(
        "--paper-batch", type=int, default=16, help="paper views at a CPU-sized batch (paper: 64 per GPU)"
    )
    parser.add_argument("--loader-batches", type=int, default=10, help="batches timed for the loader alone")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per worker count")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (views + step on that device)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/dataloader.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = ensure_world(args.world)
    batches = {"quick": args.quick_batch, "paper": args.paper_batch}
    results = []
    for preset in args.presets:
        results.append(bench_preset(args, root, preset, batches[preset]))
    print_tables(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/dataloader.py " + " ".join(__import__("sys").argv[1:]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "backbone": args.backbone,
        "device": args.device,
    }
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
