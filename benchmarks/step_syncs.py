"""Host syncs per optimiser step of every fine-tune task and every pretraining method, counted on a CPU.

Each row is one training step (loss, backward, optimiser step) after a warm-up step, on the tiny synthetic
world (test-sized specs, ViT-Tiny; pretraining: the ``quick`` preset at micro-batch 4 on the world's
``pretrain`` pool), counted by ``saip_bench.profiling.syncs.SyncCounter``: host reads of tensor values,
data-dependent-shape ops, blocking and non-blocking copies to the device of host tensors built in the
step, and blocking copies of the loader's batch. On a GPU each read, data-dependent op and blocking copy
waits for the device to finish its queue. ``--sites`` lists where each event comes from; ``--digests``
prints each step's loss and a digest of the weights after it (equal before and after a change: the
change kept every number).

    python benchmarks/step_syncs.py
    python benchmarks/step_syncs.py --only reid,saip --sites --digests
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import saip_bench  # noqa: F401  (torchvision shim before timm)
from saip_bench.profiling.step_syncs import METHODS, TASK_UNITS, method_step, task_step
from saip_bench.profiling.syncs import format_table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, help="a tiny synthetic world (default: generated, temporary)")
    parser.add_argument("--only", help="comma-separated task / method names (default: all)")
    parser.add_argument("--sites", action="store_true", help="list the source line of every event")
    parser.add_argument("--digests", action="store_true", help="print each step's loss and weight digest")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else [*TASK_UNITS, *METHODS]
    unknown = sorted(set(names) - set(TASK_UNITS) - set(METHODS))
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}; known: {', '.join([*TASK_UNITS, *METHODS])}")
    with tempfile.TemporaryDirectory(prefix="step-syncs-") as tmp:
        world = args.world
        if world is None:
            from saip_bench.data.synth import generate_world

            world = generate_world(Path(tmp) / "world", preset="tiny", seed=0, contact_sheets=False)
        rows, details = [], []
        for name in names:
            if name in TASK_UNITS:
                result = task_step(name, world)
            else:
                result = method_step(name, world / "pretrain")
            label = name if name in TASK_UNITS else f"pretrain:{name}"
            rows.append((label, result.counts.totals()))
            details.append((label, result))
    print(format_table(rows))
    for label, result in details:
        if args.digests:
            print(f"{label}: loss {result.loss!r} weights {result.digest}")
        if args.sites:
            for site, count in sorted(result.counts.sites.items()):
                print(f"  {label} {count} x {site}")


if __name__ == "__main__":
    main()
