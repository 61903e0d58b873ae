"""Every task's fit + predict and every pretraining method's training step on CUDA (``-m cuda``).

Why: CI has no GPU, so a head left on the CPU, a probe built with a CPU tensor or a batch never moved
to the device only shows up on the GPU job. These tests run tiny units (two optimiser steps, a tiny
input, a tiny head) so that ``benchmarks/gpu_check.py`` can run all of them in a few minutes of
device time.

The device is ``cuda`` when one is present; ``SAIP_CUDA_TESTS_DEVICE=cpu`` runs the same tests on the
CPU (a dry run of the tests themselves); with neither, every test is skipped. ``pytest -m cuda``
overrides the ``-m 'not slow'`` of pyproject's addopts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from saip_bench.backbones import BACKBONES, create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.discovery import import_submodules
from saip_bench.pretrain.base import METHODS
from saip_bench.specs import TaskSpec, all_task_specs
from saip_bench.tasks.base import TASKS, UnitContext, get_task

DEVICE_ENV = "SAIP_CUDA_TESTS_DEVICE"


def _choose_device() -> tuple[torch.device | None, str]:
    """(device, reason it is None): CUDA when present; the env var may name another device for a dry run."""
    requested = os.environ.get(DEVICE_ENV, "").strip()
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            return None, f"{DEVICE_ENV}={requested} but torch sees no CUDA device"
        return device, ""
    if torch.cuda.is_available():
        return torch.device("cuda"), ""
    return None, f"no CUDA device (set {DEVICE_ENV}=cpu to dry-run these tests on the CPU)"


DEVICE, SKIP_REASON = _choose_device()

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE is None, reason=SKIP_REASON)]

BACKBONE = "vit_tiny"
OTHER_BACKBONES = ("tinyvit_5m", "starnet_s3")  # one per other family: hybrid, convnet
STEPS = 2
MAX_TRAIN_SAMPLES = 16
MAX_EVAL_SAMPLES = 4
TINY_TEXT = {"type": "scratch", "max_length": 16, "width": 32, "layers": 1, "heads": 2}
# Per task: the input size, batch and head overrides that make a unit take seconds (sizes the per-task
# tests use). A task missing here still runs, at its CPU protocol's input size and head.
TINY: dict[str, dict[str, Any]] = {
    "reid": {"batch": 8, "params": {"input_size": [64, 32]}},
    "attributes": {"batch": 8, "params": {"input_size": [64, 32]}},
    "t2i_retrieval": {"batch": 8, "params": {"input_size": [64, 32]},
                      "head": {"embed_dim": 64, "text_encoder": TINY_TEXT, "mlm": None}},
    # crops_on_device forced on: what ``auto`` gives on a GPU, so the CPU dry run checks the same path
    "pose": {"batch": 8, "params": {"input_size": [64, 48], "sigma": 1.0, "crops_on_device": True},
             "head": {"deconv_channels": [16, 16]}},
    "wholebody": {"batch": 8, "params": {"input_size": [64, 48], "sigma": 1.0, "crops_on_device": True},
                  "head": {"deconv_channels": [16, 16]}},
    "parsing": {"batch": 4, "params": {"input_size": [64, 48]}, "head": {"channels": 16}},
    "multi_parsing": {"batch": 4, "params": {"input_size": [64, 80]}, "head": {"channels": 16}},
    "detection": {"batch": 2, "params": {"input_size": [96, 128]}, "head": {"channels": 16}},
    "fashion": {"batch": 2, "params": {"input_size": [96, 128]},
                "head": {"channels": 16, "detections_per_img": 10, "box_batch_per_image": 32},
                # the recipe protocol resizes by its keep-ratio rule, not input_size
                "keep_ratio": {"train_scale": 128, "ratio_range": [0.75, 1.0], "test_scale": 128}},
}

SPECS: dict[str, TaskSpec] = all_task_specs()


def _full_protocol(spec: TaskSpec) -> str:
    """The paper's full fine-tuning when the spec has it, else its default protocol."""
    return "finetune" if "finetune" in spec.protocols else spec.default_protocol


def _cheap_protocol(spec: TaskSpec) -> str | None:
    """The spec's head-only protocol (linear / frozen), preferring its default; None if it has none."""
    names = [spec.default_protocol, *sorted(spec.protocols)]
    return next((n for n in names if spec.protocols[n].kind in ("linear", "frozen")), None)


def _unit_cases() -> list[Any]:
    """Every task x dataset at its full protocol on the ViT; one head-only unit per task (its first
    dataset); and, on each other backbone family, every task's first dataset at its full protocol."""
    cases = [pytest.param(spec.task, spec.dataset, _full_protocol(spec), BACKBONE,
                          id=f"{key}:{_full_protocol(spec)}:{BACKBONE}")
             for key, spec in sorted(SPECS.items())]
    firsts: dict[str, TaskSpec] = {}
    for spec in sorted(SPECS.values(), key=lambda s: s.key):
        firsts.setdefault(spec.task, spec)
    for key, spec in ((s.key, s) for s in firsts.values()):
        cheap = _cheap_protocol(spec)
        if cheap is not None:
            cases.append(pytest.param(spec.task, spec.dataset, cheap, BACKBONE,
                                      id=f"{key}:{cheap}:{BACKBONE}"))
    for backbone in OTHER_BACKBONES:
        for key, spec in ((s.key, s) for s in firsts.values()):
            protocol = _full_protocol(spec)
            cases.append(pytest.param(spec.task, spec.dataset, protocol, backbone,
                                      id=f"{key}:{protocol}:{backbone}"))
    return cases


def _tiny_spec(spec: TaskSpec, protocol: str) -> TaskSpec:
    """A copy of ``spec`` whose ``protocol`` runs ``STEPS`` optimiser steps on tiny inputs and heads."""
    spec = spec.model_copy(deep=True)
    chosen = spec.protocols[protocol]
    tiny = TINY.get(spec.task)
    if tiny is None:  # an unknown task: its CPU protocol's size and head
        cheap = spec.protocols[_cheap_protocol(spec) or spec.default_protocol].params
        tiny = {"batch": 4, "params": {k: cheap[k] for k in ("input_size",) if k in cheap},
                "head": dict(cheap.get("head", {}))}
    chosen.schedule.max_steps = STEPS
    chosen.schedule.batch_size = min(chosen.schedule.batch_size, tiny["batch"])
    chosen.params.update(tiny["params"])
    if tiny.get("head"):
        chosen.params["head"] = {**chosen.params.get("head", {}), **tiny["head"]}
    if tiny.get("keep_ratio") and "keep_ratio" in chosen.params:
        chosen.params["keep_ratio"] = {**chosen.params["keep_ratio"], **tiny["keep_ratio"]}
    return spec


def _on_device(module: nn.Module) -> set[str]:
    """Device types of every parameter and floating buffer of ``module``."""
    tensors = [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]
    return {t.device.type for t in tensors}


@pytest.fixture(scope="module")
def datasets() -> dict[str, Any]:
    """DatasetSplits per (dataset, version), read once for the module."""
    return {}


def _read(datasets: dict[str, Any], root: Path, spec: TaskSpec) -> Any:
    key = f"{spec.dataset}/{spec.dataset_version}"
    if key not in datasets:
        datasets[key] = read_dataset(spec.dataset, root / spec.dataset, spec.dataset_version)
    return datasets[key]


def test_the_matrix_covers_every_registered_task() -> None:
    import_submodules("saip_bench.tasks")
    assert {spec.task for spec in SPECS.values()} == set(TASKS.names())


@pytest.mark.parametrize(("task_name", "dataset", "protocol", "backbone"), _unit_cases())
def test_task_unit_runs_on_the_device(
    synth_world, datasets, tmp_path, task_name, dataset, protocol, backbone
):
    spec = _tiny_spec(SPECS[f"{task_name}/{dataset}"], protocol)
    size = tuple(spec.protocols[protocol].params.get("input_size", spec.input_size))
    torch.manual_seed(0)
    ctx = UnitContext(
        spec=spec, protocol=protocol, backbone=create_backbone(backbone, size),
        data=_read(datasets, synth_world, spec), out_dir=tmp_path / "unit", cache_dir=tmp_path / "cache",
        device=DEVICE, amp=True, max_train_samples=MAX_TRAIN_SAMPLES, max_eval_samples=MAX_EVAL_SAMPLES,
        show_progress=False,
    )
    task = get_task(task_name)
    heads: list[nn.Module] = []
    build_head = task.build_head

    def keep_head(*args: Any, **kwargs: Any) -> nn.Module:  # Task.run does not return its head
        heads.append(build_head(*args, **kwargs))
        return heads[-1]

    task.build_head = keep_head  # type: ignore[method-assign]
    result = task.run(ctx)
    assert result.main_metric == spec.metric.main and math.isfinite(result.main_score), result.scores
    assert result.predictions and all(Path(p).exists() for p in result.predictions)
    assert result.extra.get("steps", STEPS) == STEPS  # the cap held (tasks that report their steps)
    chosen = spec.protocols[protocol]
    if chosen.kind == "finetune" and chosen.params.get("crops_on_device") is True:
        assert result.extra["crops_made_on"] == "device"
    (head,) = heads
    assert _on_device(ctx.backbone) == {DEVICE.type}
    assert _on_device(head) <= {DEVICE.type}  # a head may hold no parameters of its own
    if DEVICE.type == "cuda":
        assert ctx.amp, "bf16 autocast is native on the GPU"


def _method_cases() -> list[Any]:
    """Every registered method on the ViT and on each other backbone family it supports."""
    import_submodules("saip_bench.pretrain.methods")
    cases = []
    for backbone in (BACKBONE, *OTHER_BACKBONES):
        for name in METHODS.names():
            method, family = METHODS.get(name), BACKBONES.meta(backbone)["family"]
            marks = []
            if not getattr(method, "requires_training", True):
                marks.append(pytest.mark.skip(reason=f"{name!r} trains nothing (no step to run)"))
            elif family not in method.supported_families:
                marks.append(pytest.mark.skip(reason=f"{name!r} does not support {family} backbones"))
            cases.append(pytest.param(name, backbone, marks=marks, id=f"{name}:{backbone}"))
    return cases


@pytest.mark.parametrize(("method", "backbone"), _method_cases())
def test_pretraining_steps_run_on_the_device(synth_world, tmp_path, method, backbone):
    from saip_bench.pretrain import api

    overrides = {"batch_size": 4, "warmup_steps": 1, "checkpoint_every": 10_000, "num_workers": 0}
    result, trainer = api.run_training(
        method, backbone, "quick", synth_world / "pretrain", tmp_path, seed=0, steps=STEPS, amp=True,
        device=DEVICE, progress=False, overrides=overrides,
    )
    assert result.step == STEPS and len(trainer.history) == STEPS
    losses = [entry["loss"] for entry in trainer.history]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert all(math.isfinite(entry["grad_norm"]) for entry in trainer.history)
    assert _on_device(trainer.method) == {DEVICE.type}
    if DEVICE.type == "cuda":
        assert trainer.amp, "bf16 autocast is native on the GPU"


@pytest.mark.skipif(DEVICE is None or DEVICE.type != "cuda", reason="counts CUDA host syncs")
def test_a_saip_step_syncs_the_host_at_most_twice(synth_world, tmp_path):
    """A SAIP micro-step on the GPU: the packed read of loss terms + grad norm + guard verdict, and at most
    one more (budget for a sync we have not found). Each sync idles the host until the GPU is done, which
    is what kept SAIP at 1.7 % MFU in the first H200 run. ``torch.cuda.set_sync_debug_mode`` warns at every
    synchronising call."""
    import warnings

    from saip_bench.pretrain import api

    overrides = {"batch_size": 8, "warmup_steps": 1, "checkpoint_every": 10_000, "num_workers": 0}
    _, trainer = api.run_training("saip", BACKBONE, "quick", synth_world / "pretrain", tmp_path, seed=0,
                                  steps=1, amp=True, device=DEVICE, progress=False, overrides=overrides)
    trainer.total_steps += 1
    batches = trainer._batches()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer._train_step(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message)[:120] for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= 2, syncs
