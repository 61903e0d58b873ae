"""Edge profile: parameters, FLOPs, peak memory and CPU latency (eager, bf16, torch.compile, ONNX Runtime)."""

from saip_bench.profiling.core import (
    ProfileResult,
    export_onnx,
    measure_latency,
    onnx_max_abs_diff,
    peak_memory_mib,
    profile_model,
)

__all__ = [
    "ProfileResult",
    "export_onnx",
    "measure_latency",
    "onnx_max_abs_diff",
    "peak_memory_mib",
    "profile_model",
]
