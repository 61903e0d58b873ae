"""A guard around one oneDNN kernel that reads garbage under CPU bf16: strided convs with one output column.

Why: with torch 2.13's oneDNN on CPUs with AMX (Sapphire Rapids and later), the bf16 convolution kernel
``brg_conv_fwd:avx10_1_512_amx`` gives a different answer on every call, now and then NaN, for a dense
strided convolution whose output is one column wide and more than one row high (e.g. 128 -> 256
channels, 3x3 stride 2, a 4x2 map in, 2x1 out). Its result depends on what memory held before, so a
StarNet at the ``quick``/test input sizes (last downsampling on a 4x2 map) trained to NaN or not depending
on which tests had run first. float32, CUDA, the AVX512-BF16 kernel (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``)
and every other shape we swept were exact. Paper-sized inputs (256x128 and its 128x64 local crops) never
reach a one-column map, so the guard changes nothing there; where it applies, the convolution runs in
float32 on a tiny map and returns bf16, as autocast would have. GPU runs never take this path.
"""

from __future__ import annotations

import torch
from torch import nn


def _output_width(conv: nn.Conv2d, width: int) -> int:
    pad = 0 if isinstance(conv.padding, str) else int(conv.padding[1])  # "same" needs stride 1
    kernel, stride, dilation = int(conv.kernel_size[1]), int(conv.stride[1]), int(conv.dilation[1])
    return (width + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def needs_float32(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` would run the faulty kernel: a strided conv, on the CPU, computing in bf16
    (bf16 input or bf16 CPU autocast), whose output is one column wide."""
    if x.device.type != "cpu" or max(conv.stride) == 1 or x.dim() != 4:
        return False
    bf16 = x.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )
    return bf16 and _output_width(conv, int(x.shape[-1])) == 1


class CpuBf16SafeConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes in float32 where the CPU bf16 kernel is unreliable (module docstring);
    same parameters and ``state_dict`` as ``nn.Conv2d``, so checkpoints and exports do not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not needs_float32(self, x):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast("cpu", enabled=False):
            out = self._conv_forward(x.float(), self.weight.float(), bias)
        return out.to(torch.bfloat16)


def guard_strided_convs(module: nn.Module) -> int:
    """Turn every plain strided ``nn.Conv2d`` in ``module`` into a ``CpuBf16SafeConv2d`` in place (same
    parameters, same names); returns how many. Subclasses of ``nn.Conv2d`` (own ``forward``) are left."""
    count = 0
    for sub in module.modules():
        if type(sub) is nn.Conv2d and max(sub.stride) > 1:
            sub.__class__ = CpuBf16SafeConv2d
            count += 1
    return count

