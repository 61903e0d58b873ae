"""How high can a pretraining step's MFU go on an H100/H200? A roofline bound, counted on a CPU.

Why: issue 20 asks for SAIP pretraining at >= 35 % MFU (bf16 dense peak) and the H200 run measured
1.7 % (batch 64) and 3.9 % (batch 256). Whether 35 % is reachable at all for a ViT-Tiny depends on how
many of the step's bytes and kernels come with its FLOPs, which a CPU can count exactly: every aten op
of one step (views, bf16-autocast forward and backward, AdamW, the method's after-step update) is
recorded with its FLOPs (``torch.utils.flop_counter``'s formulas) and the bytes its kernel must move
(inputs + outputs, each tensor's addressed span; views move nothing). Per op, on the GPU's datasheet:

    time >= max(FLOPs / peak, bytes / memory bandwidth)

(peak: the bf16 dense peak for bf16 matrix products, the TF32 one for fp32 products, as the trainer
enables TF32). Summed over ops, that is the step's time with perfect kernels and no launch gaps, for
the ops as eager PyTorch runs them (``eager`` bound); over the matrix products and attention alone, the
time if everything else were fused into them (``fused`` bound, optimistic). A launch floor of
``--launch-us`` per op (default 4 us, an optimistic eager launch cost) is printed beside it. MFU bounds
are FLOPs / (peak x time). The real step adds launch gaps, host work and imperfect kernels, so measured
MFU sits below these bounds.

    python benchmarks/roofline.py --batch 16 32 64 --json benchmarks/results/roofline_paper.json
    python benchmarks/roofline.py --batch 2 --preset quick --methods saip   # seconds, a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import saip_bench  # noqa: F401  (torchvision shim before timm)

# datasheet figures (dense, no sparsity): bf16 and TF32 TFLOP/s, HBM TB/s
GPUS = {"H100": {"bf16": 989.4, "tf32": 494.7, "tb_s": 3.35},
        "H200": {"bf16": 989.4, "tf32": 494.7, "tb_s": 4.8}}
METHODS_DEFAULT = ["saip", "supervised_ids", "mae", "dino", "hap", "solider", "mocov3"]
SMALL_BYTES = 16 * 1024  # an op moving less than this is host-side work or a tiny kernel


@dataclass
class OpCost:
    name: str
    flops: int
    bytes: int
    bf16_product: bool  # a matrix product / attention whose inputs are bf16 (else TF32 peak)
    phase: str  # views, forward, backward or update (optimiser + the method's after-step update)


def tensor_bytes(tensor: Any) -> int:
    """Bytes a kernel addresses for ``tensor``: the span its sizes and strides reach (an expanded tensor
    reads its storage once), times the element size."""
    import torch

    if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0 or tensor.is_meta:
        return 0
    span = 1 + sum((size - 1) * abs(stride)
                   for size, stride in zip(tensor.shape, tensor.stride(), strict=True))
    return min(span, tensor.numel()) * tensor.element_size()


def count_step(name: str, preset: str, backbone: str, batch: int) -> list[OpCost]:
    """Every non-view aten op of one training step of ``name`` on random inputs (bf16 autocast)."""
    import torch
    from pretrain_step import step_inputs
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    from torch.utils.flop_counter import flop_registry

    from saip_bench.utils import autocast

    aten = torch.ops.aten
    # CPU attention kernels carry the CUDA flash kernels' FLOPs (same arguments first)
    aliases = {aten._scaled_dot_product_flash_attention_for_cpu:
               flop_registry.get(aten._scaled_dot_product_flash_attention),
               aten._scaled_dot_product_flash_attention_for_cpu_backward:
               flop_registry.get(aten._scaled_dot_product_flash_attention_backward)}
    costs: list[OpCost] = []
    phase = ["views"]

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                               kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            schema = func._schema
            if any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
                return out  # a view: no kernel, no bytes
            packet = func.overloadpacket
            formula = flop_registry.get(packet) or aliases.get(packet)
            flops = int(formula(*args, **kwargs, out_val=out)) if formula else 0
            inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            seen: set[int] = set()
            moved = 0
            for tensor in [*inputs, *(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))]:
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    moved += tensor_bytes(tensor)
            bf16 = bool(inputs) and inputs[0].dtype == torch.bfloat16
            costs.append(OpCost(str(packet.__name__), flops, moved, bf16, phase[0]))
            return out

    method, optimizer, batch_data, generator = step_inputs(name, preset, backbone, batch, "cpu")
    # the trainer's optimiser on a GPU: fused AdamW, one kernel per step
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
    optimizer = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=True)

    def step(index: int) -> None:
        phase[0] = "update"
        optimizer.zero_grad(set_to_none=True)
        phase[0] = "views"
        with torch.no_grad():
            views = method.make_views(batch_data, generator)
        phase[0] = "forward"
        with autocast("cpu", True):
            out = method(views)
        phase[0] = "backward"
        out["loss"].float().backward()
        phase[0] = "update"
        optimizer.step()
        method.on_after_step(index, 1000)

    step(1)  # the optimiser's state and the method's lazy buffers are made here, once, uncounted
    with Recorder():
        step(2)
    return costs


def bounds(costs: list[OpCost], gpu: dict[str, float], launch_us: float) -> dict[str, Any]:
    """Roofline times (ms) and MFU bounds of one step's ops on ``gpu`` (see the module docstring)."""
    bandwidth = gpu["tb_s"] * 1e12

    def op_time(cost: OpCost) -> float:
        peak = (gpu["bf16"] if cost.bf16_product else gpu["tf32"]) * 1e12
        return max(cost.flops / peak, cost.bytes / bandwidth)

    flops = sum(c.flops for c in costs)
    eager = sum(op_time(c) for c in costs)
    fused = sum(op_time(c) for c in costs if c.flops)
    launch = len(costs) * launch_us * 1e-6
    peak = gpu["bf16"] * 1e12
    heavy: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    for cost in costs:
        heavy[cost.name] += op_time(cost)
        phases[cost.phase] += 1
    return {
        "tflop": round(flops / 1e12, 4), "bf16_product_share": round(
            sum(c.flops for c in costs if c.bf16_product) / flops, 4) if flops else None,
        "gbytes": round(sum(c.bytes for c in costs) / 1e9, 3), "ops": len(costs),
        "small_ops": sum(c.bytes < SMALL_BYTES for c in costs),
        "ms_eager_roofline": round(1e3 * eager, 3), "ms_fused_roofline": round(1e3 * fused, 3),
        "ms_launch_floor": round(1e3 * launch, 3),
        "mfu_bound_fused": round(flops / peak / fused, 4) if fused else None,
        "mfu_bound_eager": round(flops / peak / eager, 4) if eager else None,
        "mfu_bound_eager_with_launches": round(flops / peak / max(eager, launch), 4) if eager else None,
        "ops_by_phase": dict(phases),
        "top_ops_ms": {k: round(1e3 * v, 3) for k, v in heavy.most_common(6)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--batch", type=int, nargs="+", default=[64], help="per-GPU micro-batches")
    parser.add_argument("--methods", nargs="*", default=METHODS_DEFAULT)
    parser.add_argument("--gpu", choices=sorted(GPUS), default="H200")
    parser.add_argument("--launch-us", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.methods:
        for batch in args.batch:
            costs = count_step(name, args.preset, args.backbone, batch)
            row = {"method": name, "preset": args.preset, "backbone": args.backbone, "batch": batch,
                   "gpu": args.gpu, "launch_us": args.launch_us,
                   **bounds(costs, GPUS[args.gpu], args.launch_us)}
            rows.append(row)
            print(f"  {name} x{batch}: {row['ops']} ops, {row['tflop']} TFLOP", file=sys.stderr, flush=True)
    print(f"\nroofline of one step on an {args.gpu} ({args.backbone}, {args.preset} preset, bf16 autocast; "
          f"launch floor {args.launch_us} us/op)\n")
    print("| method | batch | TFLOP | GB moved | ops (small) | eager roofline ms | fused roofline ms "
          "| launch floor ms | MFU bound fused | eager | eager + launches |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['batch']} | {r['tflop']:.3f} | {r['gbytes']:.1f} | "
              f"{r['ops']} ({r['small_ops']}) | "
              f"{r['ms_eager_roofline']:.1f} | {r['ms_fused_roofline']:.1f} | {r['ms_launch_floor']:.1f} | "
              f"{100 * r['mfu_bound_fused']:.1f}% | {100 * r['mfu_bound_eager']:.1f}% | "
              f"{100 * r['mfu_bound_eager_with_launches']:.1f}% |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
