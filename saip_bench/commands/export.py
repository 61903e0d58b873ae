"""``saip-bench export``: a backbone (optionally from a checkpoint) to ONNX, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from saip_bench.commands.profile import parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a backbone to ONNX with an equivalence check")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--checkpoint", default=None, help="exported backbone (.safetensors) to load")
    parser.add_argument("--img-size", type=parse_size, default=(256, 128), metavar="HxW")
    parser.add_argument("--onnx", action="store_true", required=True, help="export format (ONNX)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--atol", type=float, default=1e-4, help="max |ONNX - PyTorch| allowed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from saip_bench.backbones import BACKBONES
    from saip_bench.errors import SaipBenchError
    from saip_bench.profiling.core import backbone_builder, export_onnx, onnx_max_abs_diff

    BACKBONES.get(args.backbone)
    model = backbone_builder(args.backbone, args.img_size, args.checkpoint)()
    path = export_onnx(model, args.img_size, args.out)
    diff = onnx_max_abs_diff(model, path, args.img_size)
    if diff > args.atol:
        raise SaipBenchError(f"{path}: ONNX output differs from PyTorch by {diff:.2e} > {args.atol:.0e}")
    print(f"wrote {path} (outputs: global feature, feature map; max |diff| vs PyTorch {diff:.2e})")
    return 0
