"""``--compile`` (issue 20, item 3): regional torch.compile of the backbone's blocks, in units and records.

The eager backend (``$SAIP_COMPILE_BACKEND=eager``) keeps these tests fast and exact: dynamo traces the
blocks as it would for inductor, without a C++ build."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from saip_bench.backbones import create_backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import compile_backbone, speed_settings
from saip_bench.errors import UserError
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import Task, UnitContext


@pytest.fixture(autouse=True)
def eager_backend(monkeypatch):
    monkeypatch.setenv("SAIP_COMPILE_BACKEND", "eager")


def test_compiled_blocks_give_the_same_features_and_keep_every_name():
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", img_size=(64, 32))
    x = torch.randn(2, 3, 64, 32)
    before = backbone.forward_features(x)["cls"]
    names = list(backbone.state_dict())
    assert compile_backbone(backbone) == 12
    assert all(block._compiled_call_impl is not None for block in backbone.body.blocks)
    assert torch.equal(backbone.forward_features(x)["cls"], before)
    assert torch.equal(backbone.intermediate(x, [-1])[0], backbone.intermediate(x, [-1])[0])
    assert list(backbone.state_dict()) == names  # checkpoints, EMA, DDP and exports see the same names


def test_a_model_without_blocks_or_stages_is_a_clear_error():
    with pytest.raises(UserError, match="neither 'blocks' nor 'stages'"):
        compile_backbone(nn.Linear(2, 2))


class _Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _ProbeTask(Task):
    name = "probe"
    datasets = ()

    def build_head(self, backbone: Any, spec: Any, data: Any) -> nn.Module:
        return nn.Linear(4, 2)

    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        self.compiled = [block._compiled_call_impl is not None for block in ctx.backbone.blocks]
        head(ctx.backbone(torch.randn(2, 4)))
        return {"n_samples": {"train": {"original": 2, "effective": 2}}, "steps": 1}

    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        return []

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        return {ctx.spec.metric.main: 1.0}


@pytest.mark.parametrize("compiled", [False, True])
def test_a_unit_compiles_its_backbone_only_when_asked(tmp_path, compiled):
    task = _ProbeTask()
    data = DatasetSplits(name="probe", version="v0", root=tmp_path, splits={})
    ctx = UnitContext(spec=get_task_spec("attributes", "peta"), protocol="linear",
                      backbone=_Blocks(),  # type: ignore[arg-type]
                      data=data, out_dir=tmp_path / "out", amp=False, show_progress=False, compile=compiled)
    task.run(ctx)
    assert task.compiled == [compiled, compiled]
    assert speed_settings("cpu", compiled=compiled)["compile"] is compiled


def test_bench_and_eval_take_compile_and_workers_pass_it_on(tmp_path):
    from saip_bench.bench.parallel import worker_argv
    from saip_bench.cli import build_parser
    from saip_bench.commands.bench import add_bench_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--compile", "--loader-workers", "2", "--fail-fast", "--keep-finetuned", "--out", str(tmp_path)]))
    assert config.compile and config.loader_workers == 2 and config.fail_fast and config.keep_finetuned
    again = config_from_args(parser.parse_args(worker_argv(config, "default")))
    for field in ("compile", "loader_workers", "fail_fast", "keep_finetuned"):
        assert getattr(again, field) == getattr(config, field), field
    plain = config_from_args(parser.parse_args(["--out", str(tmp_path)]))
    assert "--compile" not in worker_argv(plain, "default") and not plain.compile
    eval_args = build_parser().parse_args(["eval", "--method", "random", "--task", "reid", "--dataset",
                                           "market1501", "--compile"])
    assert eval_args.compile
    pretrain_args = build_parser().parse_args(["pretrain", "--method", "saip", "--backbone", "vit_tiny",
                                               "--out", str(tmp_path), "--compile"])
    assert pretrain_args.compile
