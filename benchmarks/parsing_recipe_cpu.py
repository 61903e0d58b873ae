"""What a CPU-sized run of the LIP SCHP/CE2P recipe shows, beside the light CPU fine-tune (issue 22 item 2).

Why: the paper protocol (`parsing/lip` `finetune`: CE2P head, Lovász + CE + edge losses, affine crops,
SGDR, 5-scale + flip test) is sized for GPUs (576x384, batch 96, 150 epochs). This runs it on the
synthetic LIP world at the CPU protocol's size (128x96, batch 16, a step cap), with its schedule's shape
compressed into the cap (warm-up 20%, cosine to 80%, then restarts every 10%), and runs `finetune_cpu` with
the same cap, both from the same random ViT-T init. It shows that the recipe runs end to end at this
scale, what a step and the 5-scale test cost, and the scores; it says nothing about the paper's numbers.

    python benchmarks/parsing_recipe_cpu.py --steps 150                 # default synthetic world, seed 0
    python benchmarks/parsing_recipe_cpu.py --steps 60 --world /tmp/w   # reuse a generated world

Prints one JSON line per protocol: mIoU, pixel accuracy, steps, fit and predict seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from saip_bench.backbones import create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.data.synth import generate_world
from saip_bench.specs import TaskSpec, get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.utils import seed_everything

SIZE = (128, 96)


def cpu_sized(protocol: str, steps: int, steps_per_epoch: int, batch: int) -> TaskSpec:
    """The spec with ``protocol`` cut to the CPU size; the recipe's schedule shape kept inside the cap."""
    spec = get_task_spec("parsing", "lip").model_copy(deep=True)
    chosen = spec.protocols[protocol]
    chosen.schedule.max_steps = steps
    chosen.schedule.batch_size = batch
    chosen.params["input_size"] = list(SIZE)
    if chosen.schedule.scheduler == "sgdr":
        epochs = steps / steps_per_epoch
        chosen.schedule.epochs = epochs
        chosen.schedule.warmup_epochs = 0.2 * epochs
        chosen.schedule.cycle_start_epochs = 0.8 * epochs
        chosen.schedule.cycle_epochs = 0.1 * epochs
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocols", nargs="+", default=["finetune_cpu", "finetune"],
                        choices=["finetune_cpu", "finetune"])
    parser.add_argument("--world", type=Path, default=None,
                        help="a folder holding lip/ (generated if absent)")
    args = parser.parse_args()
    world = args.world or Path(tempfile.mkdtemp(prefix="lip_world_"))
    if not (world / "lip").is_dir():
        generate_world(world, preset="default", seed=0, datasets=["lip"])
    data = read_dataset("lip", world / "lip")
    steps_per_epoch = max(1, len(data.splits["train"]) // args.batch)
    for protocol in args.protocols:
        spec = cpu_sized(protocol, args.steps, steps_per_epoch, args.batch)
        seed_everything(args.seed)
        backbone = create_backbone("vit_tiny", SIZE)
        out = Path(tempfile.mkdtemp(prefix=f"lip_{protocol}_"))
        ctx = UnitContext(spec=spec, protocol=protocol, backbone=backbone, data=data, out_dir=out,
                          show_progress=False, amp=False, seed=args.seed, bootstrap_resamples=0,
                          checkpoint_every=10_000)  # resume state at the end only (CE2P: ~200 MB)
        started = time.perf_counter()
        result = get_task("parsing").run(ctx)
        total = time.perf_counter() - started
        fit = float(result.extra["fit_seconds"])
        print(json.dumps({
            "protocol": protocol, "head": result.extra["parsing_head"], "input_size": list(SIZE),
            "batch": args.batch, "steps": result.extra["steps"], "train_images": len(data.splits["train"]),
            "val_images": len(data.splits["val"]), "mIoU": round(result.scores["mIoU"], 4),
            "pixel_acc": round(result.scores["pixel_acc"], 4), "fit_s": round(fit, 1),
            "s_per_step": round(fit / max(1, result.extra["steps"]), 3),
            "predict_s": round(total - fit, 1), "threads": torch.get_num_threads(),
        }), flush=True)


if __name__ == "__main__":
    main()
