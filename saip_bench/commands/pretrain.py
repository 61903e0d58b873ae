"""``saip-bench pretrain --method M --backbone B --preset P --pretrain-data DIR --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from saip_bench.commands import add_hidden_alias


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a backbone with SAIP or a baseline (one process, or every rank under torchrun)",
    )
    parser.add_argument("--method", required=True, help="see `saip-bench list methods`")
    parser.add_argument("--backbone", required=True, help="see `saip-bench list backbones`")
    parser.add_argument("--preset", default="quick", help="quick (CPU, ~1 min) | paper (GPUs, §3.3)")
    parser.add_argument("--pretrain-data", dest="data", type=Path, default=None,
                        help="pretraining root (images/, backgrounds/), as for bench and eval (required)")
    add_hidden_alias(parser, "--data", "data", type=Path)
    parser.add_argument(
        "--out", type=Path, required=True,
        help="output folder (checkpoints, log, export); a compatible checkpoint there is continued",
    )
    parser.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--compile", nargs="?", const="blocks", default=None, choices=("blocks", "step"),
                        help="torch.compile (for GPUs): the backbone's blocks (--compile, = --set "
                        "compile=true), or the method's whole forward and backward (--compile step; "
                        "docs/performance.md)")
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
    parser.add_argument(
        "--init", type=Path, default=None, metavar="FILE",
        help="start from a published checkpoint: timm, safetensors, plain PyTorch, or an MAE/HAP/PATH "
        "release (keys remapped; the mapping report goes to the sidecar), e.g. an ImageNet DeiT-Tiny",
    )
    parser.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true")
    from saip_bench.logsinks import add_logger_argument

    add_logger_argument(parser)
    parser.add_argument(
        "--set", dest="train_set", action="append", default=[], metavar="KEY=JSON",
        help="override a trainer setting of the preset, e.g. --set lr=1e-3 (repeatable)",
    )
    parser.add_argument(
        "--cfg-options", dest="train_set", action="extend", nargs="+", metavar="KEY=VALUE",
        help="override trainer settings of the preset (as --set, which stays an alias), e.g. "
        "--cfg-options lr=1e-3 num_workers=4; validated before any data is read and recorded in the "
        "checkpoint's config (resume compares it)",
    )
    parser.add_argument(
        "--method-set", action="append", default=[], metavar="DOTTED.KEY=JSON",
        help="override a method setting, e.g. --method-set 'views.colour={\"jitter_p\": 0}' (repeatable)",
    )
    parser.set_defaults(func=run)


def parse_settings(items: list[str], flag: str) -> dict[str, Any]:
    """``["a.b=1", "c=true"]`` -> ``{"a": {"b": 1}, "c": True}``; values are JSON, else YAML (``1e-4``,
    ``[1, 2]``), bare words strings: the one parser of ``--cfg-options`` (saip_bench/overrides.py)."""
    from saip_bench.overrides import nested, parse_overrides

    return nested(parse_overrides(items, flag, scoped=False), flag)


def check_train_overrides(method: str, preset: str, overrides: dict[str, Any] | None) -> None:
    """``--set``/``--cfg-options`` against the trainer schema before any data is read or model built: an
    unknown key or a wrong type is one line naming the key and the preset file."""
    from pydantic import ValidationError

    from saip_bench.errors import SpecError, UserError
    from saip_bench.overrides import describe_errors
    from saip_bench.pretrain.trainer import PRESET_DIR, TrainConfig, load_preset

    if not overrides:
        return
    try:
        load_preset(method, preset, overrides)
    except SpecError as exc:
        if not isinstance(exc.__cause__, ValidationError):
            raise
        where = f"{PRESET_DIR / '_trainer.yaml'} (preset {preset!r}, method {method!r})"
        known = dict.fromkeys(TrainConfig.model_fields)  # listed with an unknown key
        raise UserError(f"--cfg-options/--set: {where}: {describe_errors(exc.__cause__, known)}") from None


def run(args: argparse.Namespace) -> int:
    from saip_bench.errors import UserError
    from saip_bench.pretrain.api import pretrain

    if args.data is None:
        raise UserError("pretrain needs images: give --pretrain-data DIR (the pool: images/, optional "
                        "backgrounds/; docs/layouts.md)")
    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be >= 1")
    if args.overwrite and args.resume:
        raise UserError("--resume and --overwrite contradict each other: give one")
    if args.allow_config_change and args.resume_from is None:
        raise UserError("--allow-config-change needs --resume-from CKPT (the checkpoint to continue)")
    train_overrides = parse_settings(args.train_set, "--set")
    if args.compile:
        train_overrides["compile"] = True if args.compile == "blocks" else args.compile
    check_train_overrides(args.method, args.preset, train_overrides or None)
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
        overrides=train_overrides or None,
        method_overrides=parse_settings(args.method_set, "--method-set") or None,
        overwrite=args.overwrite,
        resume_from=args.resume_from,
        allow_config_change=args.allow_config_change,
        backgrounds=args.backgrounds,
        init=args.init,
    )
    print(path)
    return 0
