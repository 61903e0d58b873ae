"""SAIP training-step cost per objective and in full, fp32 vs bf16, against the authors'-style reference.

One optimiser step as the trainer runs it (views, forward, backward, AdamW step, EMA update) on random
images at the preset's source size. Configurations: the whole SAIP step, each objective alone (the others
switched off), the reference implementation (``reference_saip.py``: per-image views, per-view passes,
unfused attention, fp32) and, with ``--methods``, any registered method (iterates ``METHODS``). Each runs
in a fresh process, so the peak memory (CPU: peak RSS incl. the ~0.4 GB runtime; CUDA: max allocated)
is its own. The reference run first checks that both implementations give the same loss terms.

    python benchmarks/pretrain_step.py --preset paper --batch 4 --threads 1
    python benchmarks/pretrain_step.py --preset paper --device cuda --batch 64 --methods all
    python benchmarks/pretrain_step.py --preset paper --device cuda --batch 64 --configs saip --compile step
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import saip_bench  # noqa: F401  (torchvision shim before timm)

OBJECTIVES = {
    "saip": {},
    "saip:csm": {"csr": False, "css": False},
    "saip:csr": {"csm": False, "css": False},
    "saip:css": {"csm": False, "csr": False},
}


# Dense peak TFLOP/s per accelerator (vendor datasheets, no sparsity), for model FLOP utilisation.
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "fp32": 66.9}, "H200": {"bf16": 989.4, "fp32": 66.9},
               "A100": {"bf16": 312.0, "fp32": 19.5}}


def peak_tflops_for(device: str, bf16: bool) -> float | None:
    """The accelerator's dense peak for the step's precision; None on CPU or an unknown GPU."""
    import os

    import torch

    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"])
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks["bf16" if bf16 else "fp32"]
    return None


def step_inputs(name: str, preset: str, backbone: str, batch: int, device: str) -> tuple:
    """(method, AdamW, batch dict, generator) of one configuration's step on random images at the preset's
    source size, seeded: what ``measure`` times and ``roofline.py`` counts."""
    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS
    from saip_bench.pretrain.trainer import load_preset, param_groups
    from saip_bench.utils import seed_everything

    import_submodules("saip_bench.pretrain.methods")
    seed_everything(0)
    method_name = "saip" if name == "reference" or name.startswith("saip") else name
    train_cfg, method_cfg = load_preset(method_name, preset)
    method_cfg = {**method_cfg, **OBJECTIVES.get(name, {})}
    if method_name == "supervised_ids" and not method_cfg.get("num_classes"):
        method_cfg["num_classes"] = 1000  # a pool's identity count sizes only the classifier; random labels
    net = create_backbone(backbone, img_size=tuple(train_cfg.img_size))
    method = METHODS.get(method_name)(net, method_cfg).to(device)
    optimizer = torch.optim.AdamW(param_groups(method, 0.05), lr=1e-4, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(0)
    source = tuple(train_cfg.source_size)
    batch_data = {
        "image": torch.rand(batch, 3, *source, generator=generator).to(device),
        "index": torch.arange(batch, device=device),
        # per-sample metadata stays on the host, as the trainer keeps it (pretrain.data.HOST_KEYS)
        "sample_seed": torch.arange(batch) + 1000,
        "step_seed": torch.tensor(7),
        "background": torch.rand(batch, 3, *train_cfg.background_size, generator=generator).to(device),
        "label": torch.arange(batch) % 4,
        "keypoints": torch.rand(batch, 17, 3, generator=generator) * 64,
    }
    return method, optimizer, batch_data, generator


def measure(
    name: str,
    preset: str,
    backbone: str,
    batch: int,
    steps: int,
    warmup: int,
    amp: bool,
    device: str,
    threads: int | None,
    compile: str | None = None,
) -> dict:
    import resource

    import torch

    from saip_bench.devices import compile_backbone, compile_step, compiled_step_inputs
    from saip_bench.utils import autocast

    if threads:
        torch.set_num_threads(threads)
    reference = name == "reference"
    method, optimizer, batch_data, generator = step_inputs(name, preset, backbone, batch, device)
    if compile and reference:
        raise ValueError("the reference step is timed eager only")
    if compile == "blocks":
        compile_backbone(method.backbone)
    elif compile == "step":
        compile_step(method)
    same_math = None
    if reference:
        from reference_saip import check_same_math, reference_step

        same_math = check_same_math(method, {k: v[:2] if v.ndim else v for k, v in batch_data.items()})

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    timings, warmup_s = [], 0.0
    for index in range(warmup + steps):
        sync()
        tic = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if reference:
            reference_step(method, batch_data)
        else:
            with torch.no_grad():
                views = method.make_views(batch_data, generator)
                if compile == "step":  # as the trainer prepares them (one layout, dynamic sizes)
                    views = compiled_step_inputs(views, method.dynamic_view_dims)
            with autocast(device, amp):
                out = method(views)
            out["loss"].float().backward()
        optimizer.step()
        method.on_after_step(index + 1, 1000)
        sync()
        if index >= warmup:
            timings.append(time.perf_counter() - tic)
        else:  # the compilation, when asked, happens here
            warmup_s += time.perf_counter() - tic
    timings.sort()
    median = timings[len(timings) // 2]
    # Model FLOPs of one step (forward + backward, counted by torch.utils.flop_counter on the saip-bench
    # path; the reference computes the same math). Untimed, after the timed steps.
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        views = method.make_views(batch_data, generator)
    # counted in eager mode: the same FLOPs, and a compiled graph hides from the counter
    with counter, autocast(device, amp and not reference), torch.compiler.set_stance("force_eager"):
        out = method(views)
        out["loss"].float().backward()
    step_flops = counter.get_total_flops()
    peak_tflops = peak_tflops_for(device, amp and not reference)
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name,
        "preset": preset,
        "backbone": backbone,
        "batch": batch,
        "precision": "fp32" if (reference or not amp) else "bf16",
        "device": device,
        "threads": torch.get_num_threads(),
        "compile": compile or False,
        "warmup_s": round(warmup_s, 1),
        "ms_per_step": median * 1e3,
        "images_per_s": batch / median,
        "peak_mem_mb": peak_mb,
        "step_tflop": step_flops / 1e12,
        "achieved_tflops": step_flops / median / 1e12,
        "mfu": (step_flops / median / 1e12 / peak_tflops) if peak_tflops else None,
        "same_math_max_abs_diff": max(same_math.values()) if same_math else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--configs",
        nargs="*",
        default=[*OBJECTIVES, "reference"],
        help="saip, saip:csm, saip:csr, saip:css, reference",
    )
    parser.add_argument("--methods", nargs="*", default=[], help="extra METHODS names, or 'all'")
    parser.add_argument("--amp", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--compile", choices=["blocks", "step"], default=None,
                        help="torch.compile every configuration but the reference (the trainer's "
                             "compile: blocks | step); the --warmup steps take the compilation")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(**json.loads(args.one))))
        return

    methods = list(args.methods)
    if methods == ["all"]:
        from saip_bench.discovery import import_submodules
        from saip_bench.pretrain.base import METHODS

        import_submodules("saip_bench.pretrain.methods")
        methods = [m for m in METHODS.names() if m != "saip"]
    precisions = {"fp32": [False], "bf16": [True], "both": [False, True]}[args.amp]
    jobs = []
    for name in [*args.configs, *methods]:
        for amp in [False] if name == "reference" else precisions:
            jobs.append(
                {
                    "name": name,
                    "preset": args.preset,
                    "backbone": args.backbone,
                    "batch": args.batch,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "amp": amp,
                    "device": args.device,
                    "threads": args.threads,
                    "compile": None if name == "reference" else args.compile,
                }
            )
    rows = []
    env = {**os.environ, "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
    for job in jobs:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(job)], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            print(f"{job['name']}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {row['config']:<10} {row['precision']}: {row['ms_per_step']:.0f} ms/step", file=sys.stderr)
    ref = next((r for r in rows if r["config"] == "reference"), None)
    print("| config | precision | compile | warm-up s | batch | ms/step | images/s | peak MB | TFLOP/step "
          "| TFLOP/s | MFU | vs reference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        speedup = f"{ref['ms_per_step'] / row['ms_per_step']:.2f}x" if ref and row["config"] == "saip" else ""
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] else "- (no GPU peak)"
        print(
            f"| {row['config']} | {row['precision']} | {row['compile'] or '-'} | {row['warmup_s']} | "
            f"{row['batch']} | "
            f"{row['ms_per_step']:.0f} | "
            f"{row['images_per_s']:.2f} | {row['peak_mem_mb']:.0f} | {row['step_tflop']:.3f} | "
            f"{row['achieved_tflops']:.3f} | {mfu} | {speedup} |"
        )
    if ref and ref["same_math_max_abs_diff"] is not None:
        print(
            f"\nsame math: max |loss term difference| reference vs saip-bench = "
            f"{ref['same_math_max_abs_diff']:.2e} (fp32, batch 2)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
