"""Cost of every registered backbone on this CPU: params, FLOPs, peak memory, latency per engine.

Prints a Markdown table and writes JSON (default benchmarks/results/profile_backbones.json).
    python benchmarks/profile_backbones.py [--img-size 256x128] [--engines eager eager_bf16 onnxruntime]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import saip_bench  # noqa: F401  (torchvision CPU shim before timm)
from saip_bench.backbones import BACKBONES
from saip_bench.commands.profile import parse_size
from saip_bench.profiling.core import backbone_builder, profile_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--img-size", type=parse_size, default=(256, 128))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--engines", nargs="+", default=["eager", "eager_bf16", "onnxruntime"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/profile_backbones.json"))
    args = parser.parse_args()

    results = []
    for name in BACKBONES.names():
        result = profile_model(name, backbone_builder(name, args.img_size), args.img_size,
                               batches=args.batch, engines=args.engines, repeats=args.repeats)
        results.append(result.to_json())
    h, w = args.img_size
    header = ["backbone", "params (M)", "GFLOPs", "peak fwd MiB"] + [
        f"{e} b{b} ms" for e in args.engines for b in args.batch
    ]
    print(f"\nInput {h}x{w}, {results[0]['threads']} threads, torch {results[0]['environment']['torch']}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        cells = [r["name"], f"{r['params_m']:.3f}", f"{r['gflops']:.3f}",
                 f"{r['memory'].get('forward_extra_mib', float('nan')):.0f}"]
        cells += [f"{r['latency'][e][str(b)]['median_ms']:.1f}" for e in args.engines for b in args.batch]
        print("| " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
