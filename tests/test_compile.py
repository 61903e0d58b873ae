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


# ------------------------------------------------------------------------------ compile: step (issue 20)
def test_compile_settings_name_their_scope():
    from saip_bench.devices import compile_scope

    assert [compile_scope(v) for v in (None, False, True, "blocks", "step")] == [
        None, None, "blocks", "blocks", "step"]
    with pytest.raises(UserError, match="none of true, false, blocks, step"):
        compile_scope("everything")
    from saip_bench.cli import build_parser

    def parsed(*extra: str) -> Any:
        return build_parser().parse_args(["pretrain", "--method", "saip", "--backbone", "vit_tiny",
                                          "--out", "x", *extra]).compile

    assert (parsed(), parsed("--compile"), parsed("--compile", "step")) == (None, "blocks", "step")


def _method_trainer(name: str, pool: Path, out: Path, compile: bool | str, **method_overrides: Any) -> Any:
    """Micro-batch 2 on a 3-block ViT-Tiny (SAIP then taps block 1, ``tap_block``, not 6): every code path
    of the step at a quarter of the tracing of 12 blocks (the 8 cases took 50 s here, against 78 s with 7
    blocks)."""
    from saip_bench.profiling.step_syncs import method_trainer

    return method_trainer(name, pool, out, batch=2, blocks=3, train_overrides={"compile": compile},
                          method_overrides=method_overrides)


@pytest.mark.parametrize("name", ["saip", "mae", "dino", "hap", "solider", "mocov3", "supervised_ids",
                                  "random"])
def test_a_compiled_step_traces_once_and_trains_as_eager(name, synth_world, tmp_path, monkeypatch):
    """``compile: step`` compiles the method's whole forward (devices.compile_step). What makes it pay on a
    GPU is that it compiles once, not every step: no Python number the step reads may change from step to
    step (the teacher temperature, DINO's schedule counters), nor the views' layouts, and sizes that vary
    are dynamic from the start (SAIP's rescaled views). Expected graphs after each of 4 steps: one; DINO
    two from step 2 (its last layer stops being frozen after step 1: one recompile a run); SOLIDER's
    labelled-crop count is data-dependent (a graph break; counts 0 and 1 get graphs of their own), so it
    is only held to its first step. The ``eager`` backend keeps it fast; the losses are eager's.

    SAIP runs on ``aot_eager``, which also builds the backward graph, as inductor does, with the sizes that
    vary: timm's antialiased position-embedding resample had no backward for them (vit.add_pos_embed). Its
    ROI crop and small anchor take one of 4 scales each per batch: all 16 size pairs must then run through
    the first graph (dynamo's limit is 8 graphs a function; past it the step silently runs eager).
    """
    from torch._dynamo.utils import counters

    if name == "saip":
        monkeypatch.setenv("SAIP_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    pool = synth_world / "pretrain"
    # DINO: the last layer frozen for the first of the 4 steps; SAIP: its tap inside the 3 blocks
    extra = {"dino": {"freeze_last_layer_fraction": 0.25}, "saip": {"tap_block": 1}}.get(name, {})
    eager = _method_trainer(name, pool, tmp_path / "eager", False, **extra)
    compiled = _method_trainer(name, pool, tmp_path / "compiled", "step", **extra)
    assert compiled.method._compiled_call_impl is not None and compiled.compiled_step
    eager_batches, compiled_batches = eager._batches(), compiled._batches()
    graphs, before = [], counters["stats"]["unique_graphs"]
    for _ in range(4):
        expected, _ = eager._train_step(eager_batches)
        logs, _ = compiled._train_step(compiled_batches)
        assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-5, abs=1e-6)
        graphs.append(counters["stats"]["unique_graphs"] - before)
    if name == "solider":
        assert graphs[0] == 2, graphs  # split at the one data-dependent shape
    elif name == "dino":
        assert graphs == [1, 2, 2, 2], graphs
    else:
        assert graphs == [1, 1, 1, 1], graphs
    if name == "saip":
        assert every_rescale_in_one_graph(compiled) == 16


def every_rescale_in_one_graph(trainer: Any) -> int:
    """Runs the compiled SAIP step on each (ROI, anchor) scale pair, failing on any recompilation; returns
    how many distinct view-size pairs it ran."""
    import numpy as np

    from saip_bench.devices import compiled_step_inputs
    from saip_bench.pretrain.data import images_to_float

    method = trainer.method
    trainer.step = 0  # the sampler starts where training stopped: rewind for one more batch
    batch = images_to_float(next(trainer._batches()), trainer.device)
    first_seed = {}  # (roi scale, anchor scale) -> a step seed that draws it, as make_saip_views does
    for seed in range(200):
        rng = np.random.default_rng(seed)
        first_seed.setdefault((float(rng.choice(method.view_cfg.scales)),
                               float(rng.choice(method.view_cfg.scales))), seed)
    sizes = set()
    for seed in first_seed.values():
        with torch.no_grad():
            views = method.make_views({**batch, "step_seed": torch.tensor(seed)}, torch.Generator())
        sizes.add((tuple(views["roi_scaled"].shape[-2:]), tuple(views["anchor_scaled"].shape[-2:])))
        with torch._dynamo.config.patch(error_on_recompile=True):
            method(compiled_step_inputs(views, method.dynamic_view_dims))["loss"].backward()
    return len(sizes)


def test_the_compiled_step_logs_its_graphs_and_says_when_a_later_step_compiles(synth_world, tmp_path, caplog,
                                                                              monkeypatch):
    """The trainer logs dynamo's graph count per step (``compile/graphs``) and says when a step after the
    first compiled again; ``gpu_check.py`` leaves such steps out of its timing. DINO with its last layer
    frozen for the first of 4 steps recompiles once, at step 2 (as above); with dynamo's limit taken as 2
    graphs, that step also reaches it (a warning, once)."""
    import logging

    from saip_bench.pretrain import trainer as trainer_module
    from saip_bench.profiling.step_syncs import method_trainer

    monkeypatch.setattr(trainer_module, "recompile_limit", lambda: 2)
    torch._dynamo.reset()
    trainer = method_trainer("dino", synth_world / "pretrain", tmp_path / "dino", batch=2, blocks=3,
                             train_overrides={"compile": "step", "log_every": 1},
                             method_overrides={"freeze_last_layer_fraction": 0.25})
    with caplog.at_level(logging.INFO, logger="saip_bench.pretrain.trainer"):
        history = trainer.fit().history
    assert [h["compile/graphs"] for h in history] == [1.0, 2.0, 2.0, 2.0]
    notes = [(r.levelname, r.getMessage()) for r in caplog.records
             if r.getMessage().startswith("compile step")]
    assert [level for level, _ in notes] == ["INFO", "WARNING"], notes
    assert notes[0][1].startswith("compile step: step 2 compiled 1 new graph(s), 2 in this run")
    assert notes[1][1].startswith("compile step: 2 graphs in this run, dynamo's limit for one function")


@pytest.mark.parametrize("mode", [None, "reduce-overhead", "max-autotune"])
def test_an_inductor_step_keeps_its_mode_and_turns_layout_optimisation_off(mode, monkeypatch):
    """On a CPU inductor's channels-last layout optimisation gave the backward the first size pair's
    strides, so SAIP's dynamic view sizes recompiled or failed (devices.step_compile_options); the mode's
    own options stay (CUDA graphs for reduce-overhead)."""
    from saip_bench.devices import COMPILE_BACKEND_ENV, COMPILE_MODE_ENV, compile_step

    calls = []

    class Method(nn.Module):
        def compile(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "inductor")
    if mode is None:
        monkeypatch.delenv(COMPILE_MODE_ENV, raising=False)
    else:
        monkeypatch.setenv(COMPILE_MODE_ENV, mode)
    compile_step(Method())
    expected = {**torch._inductor.list_mode_options(mode or "default"), "layout_optimization": False}
    assert calls == [{"backend": "inductor", "options": expected}]
    assert mode is None or expected != {"layout_optimization": False}  # the mode's options are in
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")  # other backends take no inductor options
    compile_step(Method())
    assert calls[-1] == {"backend": "aot_eager", "mode": mode}
