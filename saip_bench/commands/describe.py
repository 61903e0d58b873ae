"""``saip-bench describe TASK/DATASET [--protocol P] [--json]``: the recipe a protocol runs, and how it
differs from the authors'.

Why: a reader comparing our numbers with the paper needs the whole recipe in one place (head, input,
resize, augmentation, losses, optimizer groups, schedule, batch, drop-path, test, selection) plus the
remaining deviations, each with its reason. Everything printed is read from the validated spec: the
numbers from the protocol's own fields, the words from its ``recipe`` block.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from saip_bench.errors import UserError
from saip_bench.specs import Protocol, Schedule, TaskSpec, get_task_spec

RECIPE_FIELDS = (
    "source", "head", "input_size", "input", "resize", "augmentation", "losses", "optimizer", "groups",
    "schedule", "total_batch", "drop_path", "final_norm", "test", "selection",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "describe", help="print a spec protocol's full recipe and its deviations from the authors'"
    )
    parser.add_argument("target", metavar="TASK/DATASET", help="e.g. reid/market1501")
    parser.add_argument("--protocol", default="finetune", help="protocol name (default: finetune)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def _optimizer(schedule: Schedule) -> dict[str, Any]:
    return {"name": schedule.optimizer, "lr": schedule.lr, "weight_decay": schedule.weight_decay,
            "eps": schedule.eps, "betas": list(schedule.betas) if schedule.betas else None,
            "layer_decay": schedule.layer_decay, "grad_clip": schedule.grad_clip}


def _schedule(schedule: Schedule) -> dict[str, Any]:
    return {"epochs": schedule.epochs, "scheduler": schedule.scheduler, "milestones": schedule.milestones,
            "warmup_epochs": schedule.warmup_epochs, "warmup_steps": schedule.warmup_steps,
            "warmup_start": schedule.warmup_start, "warmup_prefix": schedule.warmup_prefix,
            "min_lr": schedule.min_lr, "max_steps": schedule.max_steps,
            **({"cycle_start_epochs": schedule.cycle_start_epochs, "cycle_epochs": schedule.cycle_epochs,
                "cycle_lr": schedule.cycle_lr} if schedule.scheduler == "sgdr" else {}),
            **({"plateau_factor": schedule.plateau_factor, "plateau_patience": schedule.plateau_patience}
               if schedule.scheduler == "plateau" else {})}


def describe(spec: TaskSpec, protocol_name: str) -> dict[str, Any]:
    """The recipe of ``spec``'s ``protocol_name`` as plain data (what ``--json`` prints)."""
    if protocol_name not in spec.protocols:
        raise UserError(f"{spec.key}: no protocol {protocol_name!r}; protocols: {', '.join(spec.protocols)}")
    protocol: Protocol = spec.protocols[protocol_name]
    schedule = protocol.schedule
    recipe = protocol.recipe
    size = protocol.params.get("input_size", spec.input_size)
    head = {"type": spec.head.type, **spec.head.params, **(protocol.params.get("head") or {})}
    words = recipe.model_dump() if recipe is not None else {}
    return {
        "task": spec.task,
        "dataset": spec.dataset,
        "protocol": protocol_name,
        "kind": protocol.kind,
        "description": " ".join(protocol.description.split()),
        "recipe_declared": recipe is not None,
        "source": words.get("source"),
        "head": {"ours": head, "recipe": words.get("head")},
        "input_size": [int(size[0]), int(size[1])],
        "input": words.get("input"),
        "resize": protocol.resize.model_dump(),
        "augmentation": words.get("augmentation"),
        "losses": words.get("losses"),
        "optimizer": _optimizer(schedule),
        "groups": schedule.groups.model_dump(),
        "schedule": _schedule(schedule),
        "total_batch": schedule.batch_size,
        "drop_path": protocol.drop_path,
        "final_norm": protocol.final_norm,
        "test": words.get("test"),
        "selection": protocol.selection,
        "params": protocol.params,
        "deviations": words.get("deviations", []),
    }


def _text(info: dict[str, Any]) -> str:
    lines = [f"{info['task']}/{info['dataset']} protocol {info['protocol']} ({info['kind']})"]
    if not info["recipe_declared"]:
        lines.append("  (no recipe block declared for this protocol: fields below are ours only)")
    for key in RECIPE_FIELDS:
        value = info[key]
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, [], {}))
        lines.append(f"  {key:<13} {value}")
    deviations = info["deviations"]
    lines.append(f"  deviations    {len(deviations) or 'none'}")
    for item in deviations:
        lines.append(f"    - {item['what']}: recipe {item['recipe']}; ours {item['ours']} ({item['reason']})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    task, sep, dataset = str(args.target).partition("/")
    if not sep or not task or not dataset:
        raise UserError(f"describe: expected TASK/DATASET (e.g. reid/market1501), got {args.target!r}")
    info = describe(get_task_spec(task, dataset), args.protocol)
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
