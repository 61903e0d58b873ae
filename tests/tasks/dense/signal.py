"""Shared set-up of the board-signal tests (issue 26, item 4): fit a spec's fast protocol briefly on the
tiny world and score it on the very images it was fitted on, so a head that learns nothing scores 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saip_bench.backbones import create_backbone
from saip_bench.specs import TaskSpec, get_task_spec
from saip_bench.tasks.base import UnitContext, get_task


def fast_protocol_spec(task: str, dataset: str) -> TaskSpec:
    """A private copy of the spec whose evaluation split is the training split."""
    spec = get_task_spec(task, dataset).model_copy(deep=True)
    spec.splits = {"train": "train", "eval": "train"}
    return spec


def fit_on_training_images(task: str, spec: TaskSpec, data: Any, out: Path) -> Any:
    """The spec's default (fast) protocol on a random-init ViT-T, seed 0, no bootstrap."""
    protocol = spec.default_protocol
    torch.manual_seed(0)
    size = tuple(spec.protocols[protocol].params["input_size"])
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=create_backbone("vit_tiny", size), data=data,
                      out_dir=out, cache_dir=out / "cache", show_progress=False, amp=False,
                      bootstrap_resamples=0)
    return get_task(task).run(ctx)
