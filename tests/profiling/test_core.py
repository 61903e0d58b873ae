import pytest
import torch

from saip_bench.backbones import BACKBONES
from saip_bench.errors import UserError
from saip_bench.profiling.core import (
    backbone_builder,
    export_onnx,
    measure_latency,
    onnx_max_abs_diff,
    peak_memory_mib,
    profile_model,
)
from saip_bench.profiling.records import profile_record


@pytest.mark.parametrize("name", BACKBONES.names())
def test_onnx_export_matches_pytorch(tmp_path, name):
    model = backbone_builder(name, (128, 64))()
    path = export_onnx(model, (128, 64), tmp_path / f"{name}.onnx")
    assert not any(m.training for m in model.modules())  # exporter must not leave train mode on
    assert onnx_max_abs_diff(model, path, (128, 64), batch=3) < 1e-4  # dynamic batch axis works


def test_measure_latency_orders_statistics():
    calls = []
    stats = measure_latency(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7
    assert stats["p25_ms"] <= stats["median_ms"] <= stats["p75_ms"]


def test_profile_model_reports_all_engines_and_record():
    result = profile_model("vit_tiny", backbone_builder("vit_tiny", (64, 32)), (64, 32), batches=(1, 2),
                           engines=("eager", "onnxruntime"), warmup=0, repeats=2, memory=False)
    assert 5.4e6 < result.params < 5.7e6 and result.flops > 0  # pos-embed sized for 64x32
    assert set(result.latency) == {"eager", "onnxruntime"}
    assert set(result.latency["eager"]) == {"1", "2"}
    assert result.onnx_max_abs_diff < 1e-4
    record = profile_record(result)
    assert record.identity.task == "profile" and record.direction == "min"
    assert record.scores["throughput_eager_b2"] == pytest.approx(2000 / record.scores["latency_ms_eager_b2"])


def test_unknown_engine_is_user_error():
    with pytest.raises(UserError, match="tensorrt"):
        profile_model("x", lambda: torch.nn.Identity(), (8, 8), engines=("tensorrt",), memory=False)


class _Big(torch.nn.Module):
    def forward(self, x):
        return (x.repeat(1, 64, 1, 1) * 2).sum()


def test_peak_memory_sees_forward_allocations():
    # 64 x (8, 3, 256, 256) float32 = 384 MiB allocated during the forward
    memory = peak_memory_mib(_Big, (256, 256), batch=8)
    assert memory["forward_extra_mib"] > 300
