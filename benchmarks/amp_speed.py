"""fp32 vs bf16 autocast for one backbone training step on this machine, and what saip-bench picks.

Why: bf16 autocast is only a speed-up where the device has native bf16 units (CUDA, or CPUs with
AVX512-BF16 / AMX). Elsewhere oneDNN emulates it and a step gets much slower, so ``resolve_amp`` turns
AMP off there. This prints the measured seconds per step for both and the resolved setting.

    python benchmarks/amp_speed.py --backbone vit_tiny --size 128x64 --batch 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import saip_bench  # noqa: F401  (installs the torchvision shim before timm)


def step_seconds(backbone, images, amp: bool, repeats: int) -> float:
    from saip_bench.utils import autocast

    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with autocast(images.device, amp):
            out = backbone.forward_features(images)["tokens"]
        out.float().mean().backward()
        timings.append(time.perf_counter() - started)
    return sorted(timings[1:])[len(timings[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--size", default="128x64", help="HxW")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.utils import bf16_is_fast, resolve_amp

    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, (height, width)).to(args.device)
    images = torch.randn(args.batch, 3, height, width, device=args.device)
    fp32 = step_seconds(backbone, images, False, args.repeats)
    bf16 = step_seconds(backbone, images, True, args.repeats)
    device_type = torch.device(args.device).type
    print(json.dumps({
        "backbone": args.backbone, "size": [height, width], "batch": args.batch, "threads": args.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_native": bf16_is_fast(device_type),
        "fp32_s_per_step": round(fp32, 4), "bf16_s_per_step": round(bf16, 4),
        "bf16_speedup": round(fp32 / bf16, 3), "resolved_amp": resolve_amp(True, args.device),
    }, indent=1))


if __name__ == "__main__":
    main()
