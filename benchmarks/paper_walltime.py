"""The ``paper`` preset's wall time on N GPUs, extrapolated from a gpu_check JSON (arithmetic shown).

    python benchmarks/paper_walltime.py benchmarks/results/gpu/gpu_check_h200.json --gpus 8

Pretraining: images per run (``--pretrain-images`` x the preset's epochs) over the measured images/s of
each method (one GPU, ViT-Tiny, the preset's per-GPU micro-batch) times N (DDP assumed linear). Fine-
tuning: per dataset, the card's training images (top-down pose: the person instances mmpose trains on)
x the spec's ``finetune`` epochs over the measured train images/s; units are spread one per GPU. Every
backbone family is charged the ViT-Tiny figure (only ViT-Tiny was measured), and evaluation is left
out (one pass over the evaluation split per unit: seconds to minutes). A lower bound in that sense.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# COCO train2017 person instances with at least one labelled keypoint: the samples a top-down pose
# epoch iterates (the card counts images and all annotations). COCO-WholeBody annotates the same people.
TOPDOWN_TRAIN_INSTANCES = 149_813


def train_images(spec: object) -> int:
    from saip_bench.specs import get_dataset_card

    card = get_dataset_card(spec.dataset)  # type: ignore[attr-defined]
    if spec.task in ("pose", "wholebody"):  # type: ignore[attr-defined]
        return TOPDOWN_TRAIN_INSTANCES
    splits = card.versions[str(card.default_version)].splits
    expression = spec.splits["train"]  # type: ignore[attr-defined]
    if expression in splits:
        return int(splits[expression]["images"])
    return sum(int(splits[name.strip()]["images"]) for name in expression.split("+"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--pretrain-images", type=int, default=1_000_000, help="LUP1M")
    args = parser.parse_args()

    from saip_bench.bench.presets import load_bench_preset
    from saip_bench.pretrain.trainer import load_preset
    from saip_bench.specs import all_task_specs

    report = json.loads(args.report.read_text())
    preset = load_bench_preset("paper")
    speed = {r["case"]: r for r in report.get("pretrain", []) if r.get("status") == "ok"}
    families = {"vit_tiny": "vit", "tinyvit_5m": "hybrid", "starnet_s3": "convnet"}
    vit_only = {"mae", "hap"}  # masked image modelling needs tokens: skipped on the other families
    print(f"# paper preset on {args.gpus} x {report['device_name']} (from {args.report.name})\n")
    print("| pretraining | runs | images per run | images/s (1 GPU) | hours per run on "
          f"{args.gpus} GPUs | hours |")
    print("|---|---|---|---|---|---|")
    pre_hours = 0.0
    for method in preset.methods:
        runs = sum(1 for b in preset.backbones if families.get(b) == "vit" or method not in vit_only)
        epochs = load_preset(method, preset.pretrain.preset)[0].epochs or 0
        images = args.pretrain_images * epochs
        row = speed.get(method)
        if row is None:
            print(f"| {method} | {runs} | {images:.3g} | not measured | - | - |")
            continue
        hours = images / (row["images_per_s"] * args.gpus) / 3600
        pre_hours += runs * hours
        print(f"| {method} | {runs} | {args.pretrain_images:,} x {epochs:g} = {images:.3g} | "
              f"{row['images_per_s']:.0f} | {images:.3g} / ({row['images_per_s']:.0f} x {args.gpus}) / 3600 "
              f"= {hours:.1f} | {runs * hours:.1f} |")
    units_per_dataset = sum(
        1 for m in preset.methods for b in preset.backbones if families.get(b) == "vit" or m not in vit_only
    ) * len(preset.seeds)
    print(f"\nPretraining (runs one after another, each on all {args.gpus} GPUs): **{pre_hours:.0f} h**\n")
    print("| fine-tune | train images x epochs | images/s (1 GPU) | hours per unit | units | GPU-hours |")
    print("|---|---|---|---|---|---|")
    ft_gpu_hours = 0.0
    finetune = {r["case"]: r for r in report.get("finetune", []) if r.get("status") == "ok"}
    for key, spec in sorted(all_task_specs().items()):
        row = finetune.get(key)
        epochs = spec.protocols["finetune"].schedule.epochs
        images = train_images(spec)
        if row is None or not row.get("train_images_per_s"):
            print(f"| {key} | {images:,} x {epochs:g} | not measured | - | {units_per_dataset} | - |")
            continue
        hours = images * epochs / row["train_images_per_s"] / 3600
        ft_gpu_hours += hours * units_per_dataset
        print(f"| {key} | {images:,} x {epochs:g} | {row['train_images_per_s']:.0f} | {hours:.1f} | "
              f"{units_per_dataset} | {hours * units_per_dataset:.0f} |")
    ft_wall = ft_gpu_hours / args.gpus
    print(f"\nFine-tuning: {ft_gpu_hours:.0f} GPU-hours, one unit per GPU: **{ft_wall:.0f} h** on "
          f"{args.gpus} GPUs")
    total = pre_hours + ft_wall
    print(f"\n**Total: {pre_hours:.0f} + {ft_wall:.0f} = {total:.0f} h = {total / 24:.1f} days** on "
          f"{args.gpus} GPUs (ViT-Tiny speeds for every family; evaluation not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
