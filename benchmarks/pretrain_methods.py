"""Training-step cost of every pretraining method: images/s, ms/step, peak memory.

One full optimiser step as the trainer runs it (batched views, forward, backward, AdamW step, EMA /
schedule hook) on random images at the preset's source size, for each (method, backbone) pair the method
supports. Each measurement runs in a fresh process so the peak-memory figure is that configuration's own.

    python benchmarks/pretrain_methods.py --preset quick --backbone vit_tiny --batch 16 --steps 5
    python benchmarks/pretrain_methods.py --preset paper --device cuda --batch 64 --amp both

On CPU, peak memory is the process's peak RSS (includes the Python/torch runtime, ~0.4 GB); on CUDA it is
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import saip_bench  # noqa: F401  (installs the torchvision shim before timm)


def measure(method_name: str, backbone_name: str, preset: str, batch: int, steps: int, warmup: int,
            amp: bool, device: str, threads: int | None) -> dict:
    import resource

    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS
    from saip_bench.pretrain.trainer import load_preset, param_groups
    from saip_bench.utils import autocast, seed_everything

    if threads:
        torch.set_num_threads(threads)
    import_submodules("saip_bench.pretrain.methods")
    train, config = load_preset(method_name, preset)
    cls = METHODS.get(method_name)
    seed_everything(0)
    backbone = create_backbone(backbone_name, img_size=tuple(train.img_size))
    reason = cls.unsupported_reason(backbone, config)
    if reason:
        return {"method": method_name, "backbone": backbone_name, "skipped": reason}
    if method_name == "supervised_ids":
        config = {**config, "num_classes": 1000}
    method = cls(backbone, config).to(device)
    method.train()
    optimizer = torch.optim.AdamW(param_groups(method, 0.05), lr=1e-4)
    height, width = train.source_size
    generator = torch.Generator().manual_seed(0)
    data = {
        "image": torch.rand(batch, 3, height, width, generator=generator).to(device),
        # per-sample metadata stays on the host, as the trainer keeps it (pretrain.data.HOST_KEYS)
        "label": torch.randint(0, 1000, (batch,), generator=generator),
        "keypoints": torch.cat([torch.rand(batch, 17, 2, generator=generator) * torch.tensor([width, height]),
                                torch.full((batch, 17, 1), 2.0)], dim=-1),
        "background": torch.rand(batch, 3, *train.background_size, generator=generator).to(device),
    }
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step(index: int) -> None:
        data["sample_seed"] = torch.arange(batch) + 1000 * index
        data["index"] = torch.arange(batch).to(device)
        data["step_seed"] = torch.tensor(7 + index)
        with torch.no_grad():
            views = method.make_views(data, generator)
        with autocast(device, amp):
            out = method(views)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].float().backward()
        optimizer.step()
        method.on_after_step(index + 1, warmup + steps)

    for index in range(warmup):
        step(index)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for index in range(warmup, warmup + steps):
        step(index)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elapsed = (time.perf_counter() - tic) / steps
    params = sum(p.numel() for p in method.parameters() if p.requires_grad) / 1e6
    return {
        "method": method_name, "backbone": backbone_name, "preset": preset, "batch": batch,
        "amp": amp, "device": device, "ms_per_step": 1000 * elapsed, "images_per_s": batch / elapsed,
        "peak_mib": peak, "trainable_params_m": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="supervised_ids,mae,dino,hap,solider,mocov3,random,saip")
    parser.add_argument("--backbone", default="vit_tiny", help="comma-separated backbone names")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--amp", choices=("on", "off", "both"), default="on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()

    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(measure(**spec)))
        return

    from rich.console import Console
    from rich.table import Table

    amps = {"on": [True], "off": [False], "both": [False, True]}[args.amp]
    rows = []
    console = Console()
    for backbone in args.backbone.split(","):
        for method in args.methods.split(","):
            for amp in amps:
                spec = {"method_name": method, "backbone_name": backbone, "preset": args.preset,
                        "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "amp": amp,
                        "device": args.device, "threads": args.threads}
                done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                                      capture_output=True, text=True, env=os.environ.copy())
                if done.returncode != 0:
                    rows.append({"method": method, "backbone": backbone, "error": done.stderr.strip()[-300:]})
                else:
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                console.print(rows[-1])
    table = Table("method", "backbone", "amp", "ms/step", "images/s", "peak MiB", "trainable M",
                  title=f"pretraining step, preset {args.preset}, batch {args.batch}, {args.device}")
    for row in rows:
        if "ms_per_step" in row:
            table.add_row(row["method"], row["backbone"], "bf16" if row["amp"] else "fp32",
                          f"{row['ms_per_step']:.0f}", f"{row['images_per_s']:.1f}", f"{row['peak_mib']:.0f}",
                          f"{row['trainable_params_m']:.1f}")
        else:
            table.add_row(row["method"], row["backbone"], "-", "-", "-", "-",
                          row.get("skipped", row.get("error", ""))[:60])
    console.print(table)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
