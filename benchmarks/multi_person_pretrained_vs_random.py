"""Multi-person tasks (CIHP, CrowdHuman, Fashionpedia): a pretrained backbone vs random init, with unit times.

Generates (or reuses) a synthetic world, pretrains one method on its ``pretrain`` folder, then runs the three
multi-person units with the given protocol on both backbones (same seed) and prints a markdown table: every
reported metric, the head's final training loss (mean of the last 5 steps) and the unit's wall time (the
frozen units must stay within the main job's budget of about 8 s each on 2 cores).

    python benchmarks/multi_person_pretrained_vs_random.py --world /tmp/world --preset default \
        --method saip --pretrain-steps 300 --backbone vit_tiny
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import saip_bench  # noqa: F401  (installs the torchvision shim before timm)

TASKS = {"multi_parsing": "cihp", "detection": "crowdhuman", "fashion": "fashionpedia"}


def run_unit(backbone, task: str, dataset: str, world: Path, out: Path, protocol: str, seed: int) -> dict:
    import numpy as np
    import torch

    from saip_bench.data.readers import read_dataset
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import UnitContext, get_task

    data = read_dataset(dataset, world / dataset)
    spec = get_task_spec(task, dataset)
    torch.manual_seed(seed)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=backbone, data=data, out_dir=out,
                      cache_dir=out / "cache", seed=seed, show_progress=False)
    started = time.perf_counter()
    result = get_task(task).run(ctx)
    return {"main": result.main_metric, "scores": result.scores, "report": spec.metric.report,
            "final_loss": float(np.mean(result.extra["losses"][-5:])),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--preset", default="default", help="synthetic world preset")
    parser.add_argument("--method", default="saip", help="pretraining method; 'none' = random init only")
    parser.add_argument("--pretrain-preset", default="quick")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--protocol", default="frozen")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs") / "multi_person_pretrained_vs_random")
    args = parser.parse_args()

    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.data.synth import generate_world

    tasks = args.tasks.split(",")
    datasets = [TASKS[t] for t in tasks] + ([] if args.method == "none" else ["pretrain"])
    generate_world(args.world, preset=args.preset, seed=0, contact_sheets=False, datasets=datasets)
    checkpoint = None
    if args.method != "none":
        from saip_bench.pretrain.api import pretrain

        checkpoint = pretrain(args.method, args.backbone, args.pretrain_preset, args.world / "pretrain",
                              args.out / "pretrain", seed=args.seed, steps=args.pretrain_steps)
    rows = []
    for task in tasks:
        for name in ("random", *([args.method] if checkpoint else [])):
            if name == "random":
                torch.manual_seed(args.seed)
                backbone = create_backbone(args.backbone, (256, 256))
            else:
                from saip_bench.pretrain.export import load_backbone

                backbone = load_backbone(checkpoint, (256, 256))
            result = run_unit(backbone, task, TASKS[task], args.world, args.out / task / name, args.protocol,
                              args.seed)
            rows.append((task, name, result))
    print(f"\nworld preset {args.preset}; protocol {args.protocol}; method {args.method} "
          f"({args.pretrain_preset}, {args.pretrain_steps} steps); seed {args.seed}\n")
    print("| task | backbone | metrics | final head loss | unit seconds |")
    print("|---|---|---|---|---|")
    for task, name, result in rows:
        metrics = ", ".join(f"{k} {result['scores'].get(k, float('nan')):.4f}" for k in result["report"])
        print(f"| {task} | {name} | {metrics} | {result['final_loss']:.4f} | {result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
