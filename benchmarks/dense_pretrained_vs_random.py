"""Does pretraining help the dense tasks? A pretrained backbone vs the same architecture at random init.

Generates (or reuses) a synthetic world, pretrains one method on its ``pretrain`` folder, then runs the
dense tasks (pose, whole-body, parsing) with the given protocol on both backbones, same seed, and prints
a markdown table: the main metric plus the frozen head's final training loss (mean of the last 5 steps,
lower = features that carry more of the target's structure).

    python benchmarks/dense_pretrained_vs_random.py --world /tmp/world --preset default \
        --method saip --pretrain-steps 300 --backbone vit_tiny
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import saip_bench  # noqa: F401  (installs the torchvision shim before timm)

TASKS = {"pose": "coco", "wholebody": "coco_wholebody", "parsing": "lip"}


def evaluate(backbone, task: str, dataset: str, world: Path, out: Path, protocol: str, seed: int,
             device: str) -> dict:
    import numpy as np
    import torch

    from saip_bench.data.readers import read_dataset
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import UnitContext, get_task

    data = read_dataset(dataset, world / dataset)
    spec = get_task_spec(task, dataset)
    torch.manual_seed(seed)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=backbone.to(device), data=data, out_dir=out,
                      cache_dir=out / "cache", seed=seed, device=torch.device(device), show_progress=False)
    started = time.perf_counter()
    result = get_task(task).run(ctx)
    return {"main": result.main_metric, "score": result.main_score, "scores": result.scores,
            "final_loss": float(np.mean(result.extra["losses"][-5:])),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--preset", default="default", help="synthetic world preset")
    parser.add_argument("--method", default="saip")
    parser.add_argument("--pretrain-preset", default="quick")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--protocol", default="frozen")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs") / "dense_pretrained_vs_random")
    args = parser.parse_args()

    from saip_bench.backbones import create_backbone
    from saip_bench.data.synth import generate_world
    from saip_bench.pretrain.api import pretrain
    from saip_bench.pretrain.export import load_backbone
    from saip_bench.utils import console

    generate_world(args.world, preset=args.preset, seed=0, contact_sheets=False,
                   datasets=["pretrain", *[TASKS[t] for t in args.tasks.split(",")]])
    started = time.perf_counter()
    checkpoint = pretrain(args.method, args.backbone, args.pretrain_preset, args.world / "pretrain",
                          args.out / "pretrain", seed=args.seed, steps=args.pretrain_steps,
                          device=args.device)
    pretrain_seconds = time.perf_counter() - started
    rows = []
    for task in args.tasks.split(","):
        dataset = TASKS[task]
        spec_size = (256, 192)
        for name in ("random", args.method):
            if name == "random":
                import torch

                torch.manual_seed(args.seed)
                backbone = create_backbone(args.backbone, spec_size)
            else:
                backbone = load_backbone(checkpoint, spec_size)
            result = evaluate(backbone, task, dataset, args.world, args.out / task / name, args.protocol,
                              args.seed, args.device)
            rows.append((task, name, result))
            console.print(f"{task} {name}: {result['main']} {result['score']:.4f} "
                          f"loss {result['final_loss']:.5f} ({result['seconds']:.1f} s)")
    print(f"\npretraining: {args.method} / {args.pretrain_preset} preset, {args.pretrain_steps} steps, "
          f"{pretrain_seconds:.0f} s; world preset {args.preset}; protocol {args.protocol}; "
          f"seed {args.seed}\n")
    print("| task | backbone | main metric | score | final head loss | unit seconds |")
    print("|---|---|---|---|---|---|")
    for task, name, result in rows:
        print(f"| {task} | {name} | {result['main']} | {result['score']:.4f} | {result['final_loss']:.5f} | "
              f"{result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
