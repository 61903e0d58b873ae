"""Does pretraining matter on the synthetic world? Pretrained backbones vs random init, several seeds.

Pretrains each ``--pretrain`` method once on the world's ``pretrain/`` folder (cached in ``--out``), then
runs every ``--unit`` (task:dataset:protocol) through the real reader, head and official metric for random
init and for each pretrained backbone, over ``--seeds`` (the random init changes with the seed too). It
prints one markdown table: mean ± sample std of the main metric per backbone, the difference to random
init, and on how many seeds the pretrained backbone beat the random one of the same seed.

Protocol overrides keep the spec's head, losses and metric and change only the budget:
``--head-steps N`` (frozen/linear heads), ``--finetune-steps N`` / ``--finetune-warmup-epochs E`` /
``--finetune-batch B`` / ``--finetune-lr`` / ``--finetune-layer-decay``
/ ``--finetune-size HxW`` (a CPU-sized fine-tune of the spec's ``finetune`` protocol; without
``--finetune-size`` it runs at the input size of the spec's fast protocol).

    python benchmarks/pretrained_vs_random.py --world /tmp/pvr_world --world-preset default \
        --pretrain supervised_ids:1500:lr=1.5e-3 --pretrain saip:1500:lr=1e-3 \
        --unit reid:market1501:linear --unit attributes:pa100k:linear --seeds 0,1,2 \
        --json benchmarks/results/pretrained_vs_random.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import saip_bench  # noqa: F401  (installs the torchvision shim before timm)


def parse_pretrain(text: str) -> tuple[str, int, dict[str, Any], dict[str, Any], str]:
    """``method:steps[:key=value,...]`` -> (method, steps, trainer overrides, method overrides, name).

    Values are JSON. ``method.<key>=`` goes to the method's settings (``method.colour={"hue":0}``);
    ``name=`` names the run (default ``<method>-<steps>``) so two variants of one method can be compared.
    """
    method, steps, *rest = text.split(":", 2)
    trainer: dict[str, Any] = {}
    method_cfg: dict[str, Any] = {}
    name = f"{method}-{steps}"
    if rest and rest[0]:
        for item in split_items(rest[0]):
            key, value = item.split("=", 1)
            if key == "name":
                name = value
            elif key.startswith("method."):
                method_cfg[key.removeprefix("method.")] = json.loads(value)
            else:
                trainer[key] = json.loads(value)  # numbers, true/false, lists
    return method, int(steps), trainer, method_cfg, name


def finished_export(out: Path, method: str, steps: int) -> bool:
    """Whether ``out`` holds the export of a finished ``steps``-step pretraining of ``method``."""
    sidecar = out / "backbone.json"
    if not (sidecar.is_file() and (out / "backbone.safetensors").is_file()):
        return False
    meta = json.loads(sidecar.read_text())
    return meta.get("method") == method and meta.get("step") == meta.get("total_steps") == steps


def split_items(text: str) -> list[str]:
    """Split ``a=1,b={"x":1,"y":2}`` on the commas outside brackets and braces."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [*items, current] if current else items


def budgeted_spec(spec: Any, protocol: str, args: argparse.Namespace) -> Any:
    """The spec with only its budget changed (steps, batch, LR, input size) for this benchmark."""
    from saip_bench.tasks.common import is_frozen

    proto = spec.protocols[protocol]
    frozen = is_frozen(proto.kind)
    schedule: dict[str, Any] = {}
    params = dict(proto.params)
    if frozen and args.head_steps:
        schedule["max_steps"] = args.head_steps
    if not frozen:
        if args.finetune_steps:
            schedule.update(max_steps=args.finetune_steps, warmup_epochs=args.finetune_warmup_epochs)
        if args.finetune_batch:
            schedule["batch_size"] = args.finetune_batch
        if args.finetune_lr:
            schedule["lr"] = args.finetune_lr
        if args.finetune_layer_decay:
            schedule["layer_decay"] = args.finetune_layer_decay
        if args.finetune_size:
            params["input_size"] = [int(v) for v in args.finetune_size.lower().split("x")]
        elif args.finetune_steps:  # CPU-sized: the input size of the spec's fast (frozen) protocol
            fast = [p for p in spec.protocols.values() if is_frozen(p.kind)]
            if fast and "input_size" in fast[0].params:
                params["input_size"] = list(fast[0].params["input_size"])
    schedule_copy = proto.schedule.model_copy(update=schedule)
    proto = proto.model_copy(update={"schedule": schedule_copy, "params": params})
    return spec.model_copy(update={"protocols": {**spec.protocols, protocol: proto}})


FIT_KEYS = ("steps", "final_loss", "loss_if_collapsed")  # kept beside the scores: was anything learned?


def run_unit(backbone: Any, unit: str, world: Path, out: Path, seed: int, args: argparse.Namespace) -> dict:
    import torch

    from saip_bench.data.readers import read_dataset
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import UnitContext, get_task
    from saip_bench.utils import seed_everything

    task, dataset, protocol = unit.split(":")
    spec = budgeted_spec(get_task_spec(task, dataset), protocol, args)
    data = read_dataset(dataset, world / dataset)
    seed_everything(seed)
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=backbone, data=data, out_dir=out,
                      cache_dir=out / "cache", seed=seed, device=torch.device(args.device),
                      show_progress=False)
    started = time.perf_counter()
    result = get_task(task).run(ctx)
    return {"metric": result.main_metric, "score": float(result.main_score),
            "scores": {k: float(v) for k, v in result.scores.items()},
            "fit": {k: result.extra[k] for k in FIT_KEYS if k in result.extra},
            "seconds": round(time.perf_counter() - started, 1)}


def unit_size(unit: str, args: argparse.Namespace) -> tuple[int, int]:
    from saip_bench.specs import get_task_spec

    task, dataset, protocol = unit.split(":")
    spec = budgeted_spec(get_task_spec(task, dataset), protocol, args)
    size = spec.protocols[protocol].params.get("input_size") or spec.input_size
    return int(size[0]), int(size[1])


def summary_rows(results: list[dict], names: list[str]) -> list[str]:
    rows = ["| unit | metric | backbone | mean ± std | Δ vs random | wins vs random (same seed) |",
            "|---|---|---|---|---|---|"]
    for unit in dict.fromkeys(r["unit"] for r in results):
        by_name = {n: {r["seed"]: r["score"] for r in results if r["unit"] == unit and r["name"] == n}
                   for n in names}
        metric = next(r["metric"] for r in results if r["unit"] == unit)
        base = by_name["random"]
        base_mean = statistics.mean(base.values())
        for name in names:
            values = list(by_name[name].values())
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            mean = statistics.mean(values)
            if name == "random":
                delta, wins = "", ""
            else:
                delta = f"{mean - base_mean:+.3f}"
                wins = f"{sum(by_name[name][s] > base[s] for s in base)}/{len(base)}"
            rows.append(f"| {unit} | {metric} | {name} | {mean:.3f} ± {std:.3f} | {delta} | {wins} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="synthetic world (generated if missing)")
    parser.add_argument("--world-preset", default="default")
    parser.add_argument("--pretrain", action="append", default=[], help="method:steps[:key=json,...]")
    parser.add_argument("--pretrain-preset", default="quick")
    parser.add_argument("--pretrain-data", type=Path, default=None,
                        help="pretraining folder (default: the world's pretrain/), e.g. a larger pool: "
                             "`saip-bench data synth --out OUT --preset large --datasets pretrain`")
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--unit", action="append", required=True, help="task:dataset:protocol")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--head-steps", type=int, default=None)
    parser.add_argument("--finetune-steps", type=int, default=None)
    parser.add_argument("--finetune-warmup-epochs", type=float, default=0.0,
                        help="linear LR warm-up of the short fine-tune (a random head would wreck "
                             "pretrained features at full LR)")
    parser.add_argument("--finetune-batch", type=int, default=None)
    parser.add_argument("--finetune-lr", type=float, default=None)
    parser.add_argument("--finetune-size", default=None, help="HxW")
    parser.add_argument("--finetune-layer-decay", type=float, default=None,
                        help="ViT layer-wise LR decay of the fine-tune (the spec's when not given)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs") / "pretrained_vs_random")
    parser.add_argument("--json", type=Path, default=None, help="write every score and the settings here")
    args = parser.parse_args()

    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.data.synth import generate_world
    from saip_bench.pretrain.api import pretrain
    from saip_bench.pretrain.export import load_backbone
    from saip_bench.utils import console

    datasets = sorted({u.split(":")[1] for u in args.unit})
    pretrain_data = args.pretrain_data or args.world / "pretrain"
    generate_world(args.world, preset=args.world_preset, seed=0, contact_sheets=False,
                   datasets=([] if args.pretrain_data else ["pretrain"]) + datasets)
    checkpoints: dict[str, Path] = {}
    pretrain_seconds: dict[str, float] = {}
    for text in args.pretrain:
        method, steps, overrides, method_overrides, name = parse_pretrain(text)
        started = time.perf_counter()
        out = args.out / "pretrain" / name
        if finished_export(out, method, steps):  # reused as is: the name stands for one finished run
            checkpoints[name] = out / "backbone.safetensors"
        else:
            resume = (out / "checkpoints" / "last.pt").is_file()  # an interrupted run continues
            checkpoints[name] = pretrain(method, args.backbone, args.pretrain_preset, pretrain_data,
                                         out, seed=0, steps=steps, resume=resume,
                                         device=args.device, overrides=overrides or None,
                                         method_overrides=method_overrides or None)
        pretrain_seconds[name] = round(time.perf_counter() - started, 1)
        console.print(f"pretrained {name} in {pretrain_seconds[name]:.0f} s")
    names = ["random", *checkpoints]
    results = []
    for unit in args.unit:
        size = unit_size(unit, args)
        for seed in (int(s) for s in args.seeds.split(",")):
            for name in names:
                torch.manual_seed(seed)
                backbone = (create_backbone(args.backbone, size) if name == "random"
                            else load_backbone(checkpoints[name], size))
                budget = (f"h{args.head_steps}_f{args.finetune_steps}w{args.finetune_warmup_epochs}"
                          f"_b{args.finetune_batch}"
                          f"_lr{args.finetune_lr}_s{args.finetune_size}"
                          + (f"_ld{args.finetune_layer_decay}" if args.finetune_layer_decay else ""))
                out = args.out / "units" / unit.replace(":", "__") / budget / f"{name}__seed{seed}"
                done = out / "result.json"  # an interrupted benchmark resumes unit by unit
                if done.is_file():
                    result = json.loads(done.read_text())
                else:
                    result = run_unit(backbone, unit, args.world, out, seed, args)
                    done.write_text(json.dumps(result, sort_keys=True))
                results.append({"unit": unit, "name": name, "seed": seed, **result})
                console.print(f"{unit} {name} seed {seed}: {result['metric']} {result['score']:.4f} "
                              f"({result['seconds']} s)")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(f"\nworld preset {args.world_preset}; pretraining ({args.pretrain_preset} preset): "
          + ", ".join(f"{n} {s:.0f} s" for n, s in pretrain_seconds.items()) + "\n")
    print("\n".join(summary_rows(results, names)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "pretrain_seconds": pretrain_seconds,
                                         "results": results}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
