"""``saip-bench profile``: params, FLOPs, memory and CPU latency of a backbone (optionally a record)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x128, got {text!r}") from exc
    return height, width


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profile", help="params, FLOPs, peak memory and CPU latency of a backbone")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--checkpoint", default=None, help="exported backbone (.safetensors) to load")
    parser.add_argument("--img-size", type=parse_size, default=(256, 128), metavar="HxW")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes to time")
    parser.add_argument("--engines", nargs="+", default=["eager", "eager_bf16", "onnxruntime"],
                        help="eager, eager_bf16, compile, onnxruntime")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probe")
    parser.add_argument("--record-dir", type=Path, default=None,
                        help="also write the profile as a cost record into this records folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from saip_bench.backbones import BACKBONES
    from saip_bench.profiling.core import backbone_builder, profile_model
    from saip_bench.profiling.records import write_profile_record

    BACKBONES.get(args.backbone)  # friendly error for unknown names
    result = profile_model(
        args.backbone, backbone_builder(args.backbone, args.img_size, args.checkpoint), args.img_size,
        batches=args.batch, engines=args.engines, warmup=args.warmup, repeats=args.repeats,
        memory=not args.no_memory,
    )
    if args.record_dir:
        write_profile_record(result, args.record_dir, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
        return 0
    console = Console()
    console.print(
        f"[bold]{result.name}[/] @ {result.img_size[0]}x{result.img_size[1]}: "
        f"{result.params / 1e6:.3f} M params, {result.flops / 1e9:.3f} GFLOPs, {result.threads} threads"
    )
    table = Table("engine", "batch", "median ms", "p25-p75 ms", "images/s", title="latency")
    for engine, by_batch in result.latency.items():
        for batch, stats in by_batch.items():
            table.add_row(engine, batch, f"{stats['median_ms']:.2f}",
                          f"{stats['p25_ms']:.2f}-{stats['p75_ms']:.2f}",
                          f"{1000 * int(batch) / stats['median_ms']:.1f}")
    console.print(table)
    if result.memory:
        console.print("memory (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in result.memory.items()))
    if result.onnx_max_abs_diff is not None:
        console.print(f"ONNX vs PyTorch max |diff|: {result.onnx_max_abs_diff:.2e}")
    return 0
