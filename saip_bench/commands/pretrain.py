"""``saip-bench pretrain --method M --backbone B --preset P --data DIR --out DIR``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a backbone with SAIP or a baseline (one process, or every rank under torchrun)",
    )
    parser.add_argument("--method", required=True, help="see `saip-bench list methods`")
    parser.add_argument("--backbone", required=True, help="see `saip-bench list backbones`")
    parser.add_argument("--preset", default="quick", help="quick (CPU, ~1 min) | paper (GPUs, §3.3)")
    parser.add_argument("--data", type=Path, required=True, help="pretraining root (images/, backgrounds/)")
    parser.add_argument(
        "--out", type=Path, required=True,
        help="output folder (checkpoints, log, export); a compatible checkpoint there is continued",
    )
    parser.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume", action="store_true",
        help="insist on continuing <out>/checkpoints/last.pt (without it, a compatible checkpoint there is "
        "continued anyway)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="delete <out>'s checkpoints, log and export and start afresh",
    )
    parser.add_argument(
        "--resume-from", type=Path, default=None, metavar="CKPT",
        help="continue this checkpoint's weights, optimiser, EMA and step (e.g. the last good one after a "
        "divergence)",
    )
    parser.add_argument(
        "--allow-config-change", action="store_true",
        help="with --resume-from: continue it under other settings (e.g. --set lr=...); recorded as lineage "
        "in the checkpoint and the export",
    )
    parser.add_argument(
        "--backgrounds", default=None, metavar="DIR",
        help="backgrounds of SAIP's multi-person canvas: a folder of images, or 'pool' (default: "
        "<data>/backgrounds/ when it has images, else the pool's own images, as the authors suggest)",
    )
    parser.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--set", dest="train_set", action="append", default=[], metavar="KEY=JSON",
        help="override a trainer setting of the preset, e.g. --set lr=1e-3 (repeatable)",
    )
    parser.add_argument(
        "--method-set", action="append", default=[], metavar="DOTTED.KEY=JSON",
        help="override a method setting, e.g. --method-set 'views.colour={\"jitter_p\": 0}' (repeatable)",
    )
    parser.set_defaults(func=run)


def parse_settings(items: list[str], flag: str) -> dict[str, Any]:
    """``["a.b=1", "c=true"]`` -> ``{"a": {"b": 1}, "c": True}``; values are JSON, bare words strings."""
    from saip_bench.errors import UserError

    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        *parents, leaf = key.split(".")
        node = settings
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{flag} {item!r}: {part!r} is set both as a value and as a group")
        node[leaf] = value
    return settings


def run(args: argparse.Namespace) -> int:
    from saip_bench.errors import UserError
    from saip_bench.pretrain.api import pretrain

    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be >= 1")
    if args.overwrite and args.resume:
        raise UserError("--resume and --overwrite contradict each other: give one")
    if args.allow_config_change and args.resume_from is None:
        raise UserError("--allow-config-change needs --resume-from CKPT (the checkpoint to continue)")
    path = pretrain(
        args.method,
        args.backbone,
        args.preset,
        args.data,
        args.out,
        seed=args.seed,
        steps=args.steps,
        resume=args.resume,
        amp=False if args.no_amp else None,
        device=args.device,
        progress=not args.no_progress,
        overrides=parse_settings(args.train_set, "--set") or None,
        method_overrides=parse_settings(args.method_set, "--method-set") or None,
        overwrite=args.overwrite,
        resume_from=args.resume_from,
        allow_config_change=args.allow_config_change,
        backgrounds=args.backgrounds,
    )
    print(path)
    return 0
