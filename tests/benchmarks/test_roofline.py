"""``benchmarks/roofline.py``: the FLOPs it counts are torch's own count of the same step, the bytes are
what a kernel addresses, and the bounds follow their formulas (docs/performance.md quotes them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "roofline.py"


def load_script():
    if "roofline" in sys.modules:
        return sys.modules["roofline"]
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("roofline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["roofline"] = module
    spec.loader.exec_module(module)
    return module


def test_addressed_bytes_count_an_expanded_tensor_once():
    script = load_script()
    row = torch.zeros(1, 192)
    assert script.tensor_bytes(row) == 192 * 4
    assert script.tensor_bytes(row.expand(64, 192)) == 192 * 4
    assert script.tensor_bytes(torch.zeros(8, 4, dtype=torch.bfloat16).t()) == 64
    assert script.tensor_bytes(torch.zeros(0, 3)) == 0


def test_step_flops_equal_torch_flop_counter_and_bounds_follow_their_formulas():
    """One quick SAIP step at batch 2: the forward and backward FLOPs other than attention are what
    ``FlopCounterMode`` counts for the same step, and attention is counted too (the CPU kernels through
    the formulas of the CUDA ones)."""
    script = load_script()  # puts benchmarks/ on the path, for pretrain_step
    from pretrain_step import step_inputs
    from torch.utils.flop_counter import FlopCounterMode

    from saip_bench.utils import autocast

    costs = script.count_step("saip", "quick", "vit_tiny", 2)
    method, _, batch_data, generator = step_inputs("saip", "quick", "vit_tiny", 2, "cpu")
    with torch.no_grad():
        views = method.make_views(batch_data, generator)
    counter = FlopCounterMode(display=False)
    with counter, autocast("cpu", True):
        method(views)["loss"].float().backward()
    attention = sum(c.flops for c in costs if c.name.startswith("_scaled_dot_product"))
    others = sum(c.flops for c in costs if c.phase in ("forward", "backward")) - attention
    assert attention > 0  # torch's counter has no formula for the CPU attention kernels; a GPU's it has
    assert others == counter.get_total_flops() > 0

    gpu = {"bf16": 1000.0, "tf32": 500.0, "tb_s": 5.0}
    row = script.bounds(costs, gpu, launch_us=4.0)
    eager = sum(max(c.flops / ((1000.0 if c.bf16_product else 500.0) * 1e12), c.bytes / 5e12) for c in costs)
    assert row["ms_eager_roofline"] == pytest.approx(1e3 * eager, abs=1e-3)
    assert row["ms_launch_floor"] == pytest.approx(len(costs) * 4e-3)
    assert row["mfu_bound_fused"] >= row["mfu_bound_eager"] >= row["mfu_bound_eager_with_launches"] > 0
    assert row["mfu_bound_fused"] <= 1.0
