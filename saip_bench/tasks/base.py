"""The task interface the runner drives: build a head, fit, predict to files, score the files.

Why: the runner, the CLI and the tests treat all 9 tasks alike; predictions are files in the official
result formats so anyone can re-score them with ``saip-bench metric``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import device_guard, enable_speed, place_models
from saip_bench.registry import Registry
from saip_bench.specs import TaskSpec
from saip_bench.utils import resolve_amp

TASKS: Registry[type[Task]] = Registry("task")


@dataclass
class UnitContext:
    """Everything one evaluation unit needs; built by the runner or ``saip-bench eval``."""

    spec: TaskSpec
    protocol: str
    backbone: Backbone
    data: DatasetSplits
    out_dir: Path
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = True
    num_workers: int = 0
    max_train_samples: int | None = None  # set only by --limit runs (marked, never on boards)
    max_eval_samples: int | None = None
    visualize: int = 0  # write this many prediction PNGs under out_dir/vis
    cache_dir: Path | None = None  # shared by units of one backbone checkpoint (frozen-feature caches)
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.amp = resolve_amp(self.amp, self.device)  # bf16 only where the device runs it natively

    @property
    def protocol_spec(self) -> Any:
        return self.spec.protocols[self.protocol]


@dataclass
class UnitResult:
    scores: dict[str, float]
    main_metric: str
    main_score: float
    predictions: list[Path]
    n_samples: dict[str, dict[str, int]]  # split -> {"original": N, "effective": n}
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """One downstream task; subclasses register with ``@TASKS.register(name)``."""

    name: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]

    @abstractmethod
    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        """The task head (and any neck) on top of ``backbone``."""

    @abstractmethod
    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        """Train per ``ctx.protocol`` (finetune: backbone too; linear/frozen: head only)."""

    @abstractmethod
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        """Write predictions for the evaluation split in the official result format."""

    @abstractmethod
    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        """Pure metric call on the prediction files and the ground truth."""

    def run(self, ctx: UnitContext) -> UnitResult:
        torch.manual_seed(ctx.seed)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        enable_speed(ctx.device)
        place_models(ctx.device, ctx.backbone)  # heads may probe the backbone (dense channel counts)
        head = self.build_head(ctx.backbone, ctx.spec, ctx.data)
        place_models(ctx.device, ctx.backbone, head)
        with device_guard(backbone=ctx.backbone, head=head):
            fit_info = self.fit(ctx, head)
        with device_guard(backbone=ctx.backbone, head=head):  # re-armed: prediction feeds other batches
            predictions = self.predict(ctx, head)
        scores = self.score(ctx, predictions)
        main = ctx.spec.metric.main
        return UnitResult(
            scores=scores,
            main_metric=main,
            main_score=float(scores[main]),
            predictions=predictions,
            n_samples=dict(fit_info.get("n_samples", {})),
            extra={k: v for k, v in fit_info.items() if k != "n_samples"},
        )


def get_task(name: str) -> Task:
    from saip_bench.discovery import import_submodules

    import_submodules("saip_bench.tasks")
    return TASKS.get(name)()
