"""The CPU bf16 strided-conv guard (``saip_bench/backbones/cpu_bf16.py``).

The regression tests fill freed memory with NaN between two identical calls: the faulty oneDNN kernel
(AMX CPUs) reads memory it never wrote, so without the guard the two answers differ or are NaN. On a CPU
without AMX the kernel is not used and they pass either way.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from saip_bench.backbones import create_backbone
from saip_bench.backbones.cpu_bf16 import CpuBf16SafeConv2d, guard_strided_convs, needs_float32


def _dirty_heap() -> None:
    """Leave NaN in memory the allocator will hand out next (what an earlier test might leave)."""
    junk = torch.empty(4_000_000).fill_(float("nan"))
    del junk


def _float32_then_bf16(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    bias = None if conv.bias is None else conv.bias.float()
    weight = conv.weight.float()
    out = F.conv2d(x.float(), weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return out.to(torch.bfloat16)


def test_a_starnet_step_at_a_tiny_size_gives_the_same_finite_answer_twice_under_cpu_bf16() -> None:
    """The test-order NaN of issue 20: StarNet's last downsampling maps 4x2 -> 2x1 at a 64x32 input."""
    torch.manual_seed(0)
    backbone = create_backbone("starnet_s3", (64, 32))
    x = torch.randn(8, 3, 64, 32)
    answers = []
    for _ in range(3):
        backbone.zero_grad(set_to_none=True)
        _dirty_heap()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cls = backbone.forward_features(x)["cls"]
        cls.float().square().sum().backward()
        grads = torch.cat([p.grad.flatten() for p in backbone.parameters() if p.grad is not None])
        answers.append((cls.detach().float(), grads))
    for cls, grads in answers:
        assert torch.isfinite(cls).all() and torch.isfinite(grads).all()
        assert torch.equal(cls, answers[0][0]) and torch.equal(grads, answers[0][1])


def test_a_one_column_strided_conv_computes_in_float32_and_returns_bf16() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 256, 3, stride=2, padding=1)
    guard_strided_convs(conv)
    assert isinstance(conv, CpuBf16SafeConv2d)
    x = torch.randn(8, 128, 4, 2)
    for _ in range(2):
        _dirty_heap()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        assert out.dtype == torch.bfloat16 and out.shape == (8, 256, 2, 1)
        assert torch.equal(out, _float32_then_bf16(conv, x))
    bf16_conv = copy.deepcopy(conv).to(torch.bfloat16)  # bf16 weights without autocast: same rule
    assert needs_float32(bf16_conv, x.bfloat16())
    assert torch.equal(bf16_conv(x.bfloat16()), _float32_then_bf16(bf16_conv, x.bfloat16()))


def test_other_shapes_devices_and_dtypes_keep_the_plain_conv() -> None:
    strided, plain = nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.Conv2d(64, 64, 3, padding=1)
    guard_strided_convs(strided)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert needs_float32(strided, torch.zeros(1, 64, 8, 2))  # 2 columns in, 1 out
        assert not needs_float32(strided, torch.zeros(1, 64, 8, 4))  # 2 columns out
        assert not needs_float32(plain, torch.zeros(1, 64, 8, 1))  # stride 1
        assert not needs_float32(strided, torch.zeros(1, 64, 8, 2, device="meta"))  # not the CPU
        x = torch.randn(2, 64, 8, 4)
        unguarded = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        unguarded.load_state_dict(strided.state_dict())
        assert torch.equal(strided(x), unguarded(x))  # the same bf16 kernel: bit-identical
    assert not needs_float32(strided, torch.zeros(1, 64, 8, 2))  # float32, no autocast


def test_every_backbone_body_is_guarded_even_when_replaced_and_keeps_its_state_dict_names() -> None:
    backbone = create_backbone("starnet_s3", (64, 32))
    strided = [m for m in backbone.modules() if isinstance(m, nn.Conv2d) and max(m.stride) > 1]
    assert strided and all(type(m) is CpuBf16SafeConv2d for m in strided)
    names = set(backbone.body.state_dict())
    import timm

    backbone.body = timm.create_model("starnet_s3", pretrained=False, num_classes=0)  # e.g. apply_drop_path
    assert set(backbone.body.state_dict()) == names
    assert any(type(m) is CpuBf16SafeConv2d for m in backbone.body.modules())
