"""Cost of a unit: wall time, peak memory, and the backbone's params / FLOPs / latency at the task's input.

Why: the score-vs-cost Pareto plot and any claim about "lightweight" need measured costs next to the
scores, taken the same way for every method.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import torch

from saip_bench.backbones import Backbone, count_parameters, flops

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CostMeter:
    """Context manager: wall seconds and peak process RSS (and CUDA peak) while the block runs.

    The RSS peak covers the whole process (data already in memory included); it is reset at entry
    where Linux allows, otherwise it is the process-lifetime peak (``peak_rss_is_lifetime`` = 1).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.cost: dict[str, float] = {}

    def __enter__(self) -> CostMeter:
        self._reset_ok = _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cost["wall_s"] = round(time.perf_counter() - self._start, 3)
        self.cost["peak_rss_mib"] = round(_peak_rss_mib(), 1)
        if not self._reset_ok:
            self.cost["peak_rss_is_lifetime"] = 1.0
        if self.device.type == "cuda":
            self.cost["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)


SIZE_DEPENDENT = ("pos_embed",)  # parameter names whose shape follows the input size (ViT position table)


def size_free_parameters(backbone: torch.nn.Module) -> int:
    """Parameters that do not depend on the input size: all but a learnable position-embedding table.

    Why: a ViT's position table has one vector per patch, so its parameter count changes with the
    task's input size (vit_tiny: 5.511 M at 256x128, 5.683 M at 512x512); without the table the
    count is one number per backbone."""
    return sum(p.numel() for name, p in backbone.named_parameters()
               if name.split(".")[-1] not in SIZE_DEPENDENT)


def backbone_cost(backbone: Backbone, input_size: tuple[int, int], device: torch.device | str = "cpu",
                  repeats: int = 5) -> dict[str, float]:
    """Params (M) at ``input_size`` and without the size-dependent position table, forward GFLOPs at
    ``input_size`` (multiply-add = 2), batch-1 latency (ms, median), and the input size itself."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    cost = {
        "params_m": round(count_parameters(backbone) / 1e6, 4),
        "params_m_size_free": round(size_free_parameters(backbone) / 1e6, 4),
        "gflops": float(f"{flops(backbone, tuple(input_size)) / 1e9:.4g}"),
        "input_h": float(input_size[0]),
        "input_w": float(input_size[1]),
    }
    x = torch.zeros(1, 3, *input_size, device=device)
    model = backbone.to(device)
    timings = []
    with torch.no_grad():
        for index in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= 2:  # warm-up
                timings.append((time.perf_counter() - start) * 1000)
    cost["latency_ms"] = round(statistics.median(timings), 3)
    backbone.train(was_training)
    return cost
