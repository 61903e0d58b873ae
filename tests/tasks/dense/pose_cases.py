"""Shared set-up of the pose / whole-body device-path tests: the two layouts, their tiny worlds, and a
4-step fine-tune unit small enough to compare two ways of feeding it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saip_bench.backbones import create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task

# task -> (dataset, mmpose layout, codec of its fine-tune recipe)
CASES = {"pose": ("coco", "coco", "udp"), "wholebody": ("coco_wholebody", "coco_wholebody", "msra")}


def read_worlds(synth_world: Path) -> dict[str, Any]:
    """Both layouts' datasets of the synthetic world, by task."""
    return {task: read_dataset(dataset, synth_world / dataset) for task, (dataset, _, _) in CASES.items()}


def finetune(data: Any, task: str, out: Path, num_workers: int = 0, **params: Any) -> Any:
    """4 fine-tune steps of batch 8 at 64x48 (sigma 1), amp off, seed 0; ``params`` overrides the
    protocol's params (e.g. ``crops_on_device``)."""
    spec = get_task_spec(task, CASES[task][0]).model_copy(deep=True)
    schedule = spec.protocols["finetune"].schedule
    schedule.max_steps, schedule.batch_size = 4, 8
    spec.protocols["finetune"].params.update({"input_size": [64, 48], "sigma": 1.0,
                                              "head": {"deconv_channels": [16, 16]}, **params})
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", (64, 48))
    ctx = UnitContext(spec=spec, protocol="finetune", backbone=backbone, data=data, out_dir=out,
                      cache_dir=None, show_progress=False, amp=False, num_workers=num_workers)
    return get_task(task).run(ctx)
