"""``saip-bench pretrain --method M --backbone B --preset P --data DIR --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a backbone with SAIP or a baseline (one process, or every rank under torchrun)",
    )
    parser.add_argument("--method", required=True, help="see `saip-bench list methods`")
    parser.add_argument("--backbone", required=True, help="see `saip-bench list backbones`")
    parser.add_argument("--preset", default="quick", help="quick (CPU, ~1 min) | paper (GPUs, §3.3)")
    parser.add_argument("--data", type=Path, required=True, help="pretraining root (images/, backgrounds/)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, log, export)")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt")
    parser.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from saip_bench.errors import UserError
    from saip_bench.pretrain.api import pretrain

    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be >= 1")
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
    )
    print(path)
    return 0
