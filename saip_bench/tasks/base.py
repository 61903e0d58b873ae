"""The task interface the runner drives: build a head, fit, predict to files, score the files.

Why: the runner, the CLI and the tests treat all 9 tasks alike; predictions are files in the official
result formats so anyone can re-score them with ``saip-bench metric``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from saip_bench import logsinks
from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import compile_backbone, device_guard, enable_speed, place_models
from saip_bench.errors import UserError
from saip_bench.metrics import bootstrap
from saip_bench.registry import Registry
from saip_bench.specs import SELECTION_SUPPORT, TaskSpec, stable_hash
from saip_bench.tasks import common, parallel
from saip_bench.tasks.dense.features import unread_parameters
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
    bootstrap_resamples: int = bootstrap.DEFAULT_RESAMPLES  # 0 = no intervals
    # set by ``Task.run`` when the protocol selects a best epoch: tasks pass it to their fit loop
    epoch_end: Callable[[int], None] | None = None
    # fine-tune checkpoints (issue 19): resume state every N epochs, set by ``Task.run`` for the fit loop
    checkpoint_every: int = 1
    fit_checkpoint: common.FitCheckpoint | None = None
    keep_finetuned: bool = False  # write the final (selected) weights as safetensors + sidecar in out_dir
    loggers: tuple[str, ...] | None = None  # the fit's scalar sinks (logsinks.py); None: the --logger default
    run_log: logsinks.RunLog | None = None  # set by ``Task.run`` while the unit runs
    # issue 19, item 2: fit this unit data-parallel over the initialised process group (every rank calls
    # ``Task.run`` on the same unit); per_rank_batch caps the per-rank batch (the rest is accumulation)
    data_parallel: bool = False
    per_rank_batch: int | None = None
    compile: bool = False  # torch.compile the backbone's blocks before the fit (``--compile``)

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
    uncertainty: dict[str, Any] | None = None  # the record's bootstrap intervals (ResultRecord.uncertainty)


class Task(ABC):
    """One downstream task; subclasses register with ``@TASKS.register(name)``."""

    name: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]
    # checkpoint-selection policies this task implements; a task listing a best_* policy passes
    # ``ctx.epoch_end`` to its fit loop (specs.SELECTION_SUPPORT mirrors this for spec validation)
    selections: ClassVar[tuple[str, ...]] = ("final",)
    # data-parallel units: True when ``predict`` shards its images over the ranks and gathers the features
    # (``common.sharded_extract``), so every rank calls it; otherwise rank 0 predicts and scores alone
    shards_predict: ClassVar[bool] = False
    # data-parallel units: True when the loss may skip a branch of the head in a step (DDP must then look
    # for parameters without a gradient every step, a graph walk per step: ``leaves_parameters_unused``)
    skips_branches: ClassVar[bool] = False

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
        dp = data_parallel_plan(ctx)  # None: the single-process fit
        with parallel.active(dp), self._run_log(ctx, dp) as ctx.run_log:  # closed on failure too
            result = self._run(ctx, dp)
            ctx.run_log.summary({f"final/{name}": value for name, value in result.scores.items()})
        ctx.run_log = None
        result.extra.update(dp.summary() if dp is not None else {
            "world_size": 1, "per_rank_batch": ctx.protocol_spec.schedule.batch_size, "accumulation": 1,
            "effective_batch": ctx.protocol_spec.schedule.batch_size})
        return result

    def _run_log(self, ctx: UnitContext, dp: parallel.DataParallel | None) -> logsinks.RunLog:
        """The unit's ``--logger`` sinks, in its folder beside finetune_log.jsonl, written by the process
        that writes that log (rank 0 of a data-parallel unit)."""
        config = {"task": self.name, "spec": ctx.spec.key, "protocol": ctx.protocol, "seed": ctx.seed,
                  "backbone": getattr(ctx.backbone, "name", type(ctx.backbone).__name__)}
        return logsinks.RunLog(ctx.out_dir, ctx.loggers, name=ctx.out_dir.name, config=config,
                               enabled=dp is None or dp.is_writer)

    def _run(self, ctx: UnitContext, dp: parallel.DataParallel | None) -> UnitResult:
        torch.manual_seed(ctx.seed)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        enable_speed(ctx.device)
        protocol = ctx.protocol_spec
        self._check_selection(ctx)
        if protocol.kind == "finetune":  # stochastic depth only where the backbone trains
            common.apply_drop_path(ctx.backbone, protocol.drop_path)
        set_final_norm(ctx.backbone, protocol.final_norm)
        place_models(ctx.device, ctx.backbone)  # heads may probe the backbone (dense channel counts)
        head = self.build_head(ctx.backbone, ctx.spec, ctx.data)
        place_models(ctx.device, ctx.backbone, head)
        if ctx.compile:
            compile_backbone(ctx.backbone)
        if dp is not None and dp.distributed and dp.rank > 0:
            # each rank its own augmentation / dropout draws (DDP gives every rank rank 0's weights);
            # rank 0 keeps a single process's stream
            torch.manual_seed(ctx.seed + parallel.RANK_SEED_STRIDE * dp.rank)
        selector = self._selector(ctx, head)
        checkpoint = ctx.fit_checkpoint = common.FitCheckpoint(
            ctx.out_dir / common.FIT_STATE, lambda: unit_fingerprint(self.name, ctx), ctx.checkpoint_every,
            ctx.out_dir / common.FIT_LOG if ctx.run_log is None or ctx.run_log.jsonl else None, selector,
            ctx.run_log, ctx.spec.metric.main)
        if dp is not None and dp.distributed:
            unused = parallel.agreed(lambda: self.leaves_parameters_unused(ctx, head),
                                     f"{ctx.spec.key}: the parameters the loss reads", dp)
            dp = dataclasses.replace(dp, unused_parameters=unused)
        with parallel.active(dp), device_guard(backbone=ctx.backbone, head=head):
            fit_info = self.fit(ctx, head)
        ctx.epoch_end = None
        ctx.fit_checkpoint = None
        if checkpoint.resumed_from is not None:
            fit_info["resumed_from_epoch"] = checkpoint.resumed_from
        fit_info["selection"] = protocol.selection
        fit_info.update(common.protocol_summary(protocol))
        if selector is not None:
            fit_info.update(selector.restore())
        if ctx.keep_finetuned:
            fit_info["finetuned"] = parallel.on_rank0(
                lambda: save_finetuned(ctx, self.name, head, self.finetuned_meta(ctx, head)),
                "writing the fine-tuned weights", dp)
        with device_guard(backbone=ctx.backbone, head=head):  # re-armed: prediction feeds other batches
            predictions, scores, uncertainty = self.predict_and_score(ctx, head, dp, intervals=True)
        if dp is None or dp.is_writer:
            checkpoint.discard()  # scored: the resume state is only disk now (--keep-finetuned kept it)
        main = ctx.spec.metric.main
        return UnitResult(
            scores=scores,
            main_metric=main,
            main_score=float(scores[main]),
            predictions=predictions,
            n_samples=dict(fit_info.get("n_samples", {})),
            extra={k: v for k, v in fit_info.items() if k != "n_samples"},
            uncertainty=uncertainty,
        )

    def leaves_parameters_unused(self, ctx: UnitContext, head: nn.Module) -> bool:
        """Whether a parameter of this unit may get no gradient in a fine-tune step, so that DDP must look
        for such parameters every step (``parallel.wrap``): the task's loss ``skips_branches``, or a dense
        head (one that reads the backbone's ``levels``) leaves backbone parameters unread. Elsewhere every
        parameter gets a gradient, and the flag would only cost a graph walk per step (and a warning)."""
        if self.skips_branches:
            return True
        levels = getattr(head, "levels", None)
        return levels is not None and bool(unread_parameters(ctx.backbone, levels))

    def prediction_ranks(self) -> parallel.DataParallel | None:
        """The ranks that share this unit's prediction (``parallel.predict_in_shards``): the running
        data-parallel plan when this task ``shards_predict`` (every rank is then in ``predict``), else
        None (``predict`` runs in one process: a single-process unit, or rank 0 alone)."""
        dp = parallel.current()
        return dp if dp is not None and dp.distributed and self.shards_predict else None

    def finetuned_meta(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        """Extra sidecar fields of ``--keep-finetuned`` weights: what a later user of the weights needs to
        predict as this unit did (the pose tasks add their input size, codec and levels)."""
        return {}

    def predict_and_score(self, ctx: UnitContext, head: nn.Module, dp: parallel.DataParallel | None,
                          intervals: bool) -> tuple[list[Path], dict[str, float], dict[str, Any] | None]:
        """Predictions (files) and their scores. In a data-parallel unit only rank 0 writes the files and
        scores them; the other ranks receive its scores (the same on every rank, so a best-epoch choice
        agrees), and a task that ``shards_predict`` has every rank extract its share first."""

        def score(predictions: list[Path]) -> tuple[dict[str, float], dict[str, Any] | None]:
            if intervals:
                return self.score_with_intervals(ctx, predictions)
            return self.score(ctx, predictions), None

        if dp is None or not dp.distributed:
            predictions = self.predict(ctx, head)
            return (predictions, *score(predictions))
        if not self.shards_predict:
            return parallel.on_rank0(lambda: (lambda p: (p, *score(p)))(self.predict(ctx, head)),
                                     f"{ctx.spec.key}: prediction and scoring", dp)
        out_dir = ctx.out_dir
        scratch = None if dp.is_writer else Path(tempfile.mkdtemp(prefix=f"saip-rank{dp.rank}-"))
        try:  # a rank other than 0 writes its copy of the files to a scratch folder, deleted below
            ctx.out_dir = scratch or out_dir
            predictions = parallel.agreed(lambda: self.predict(ctx, head), f"{ctx.spec.key}: prediction", dp)
        finally:
            ctx.out_dir = out_dir
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return parallel.on_rank0(lambda: (predictions, *score(predictions)), f"{ctx.spec.key}: scoring", dp)

    def score_with_intervals(self, ctx: UnitContext, predictions: list[Path]
                             ) -> tuple[dict[str, float], dict[str, Any] | None]:
        """``score`` plus the bootstrap intervals its metric calls offer (seeded by the unit's seed).

        Why here: one place for every task; the metrics resample the arrays they score themselves."""
        if ctx.bootstrap_resamples < 2:
            return self.score(ctx, predictions), None
        config = bootstrap.BootstrapConfig(resamples=ctx.bootstrap_resamples, seed=ctx.seed)
        with bootstrap.collecting(config) as collector:
            scores = self.score(ctx, predictions)
        return scores, collector.summary()

    def _check_selection(self, ctx: UnitContext) -> None:
        """A spec built in code skips file validation; the same closed table still applies here."""
        policy = ctx.protocol_spec.selection
        if policy not in self.selections or policy not in SELECTION_SUPPORT.get(self.name, ("final",)):
            raise UserError(
                f"{ctx.spec.key}: protocols.{ctx.protocol}.selection {policy!r} is not supported for task "
                f"{self.name!r} yet (supported: {', '.join(self.selections)})"
            )

    def _selector(self, ctx: UnitContext, head: nn.Module) -> common.BestEpoch | None:
        """For best_* policies: score the reported split after every epoch (predict + the pure metric, as
        at the end, without intervals) and keep the best weights; visualisations only in the final pass."""
        if ctx.protocol_spec.selection == "final":
            return None

        def evaluate() -> float:
            visualize, ctx.visualize = ctx.visualize, 0
            try:
                _, scores, _ = self.predict_and_score(ctx, head, parallel.current(), intervals=False)
            finally:
                ctx.visualize = visualize
            return float(scores[ctx.spec.metric.main])

        selector = common.BestEpoch([ctx.backbone, head], evaluate, ctx.spec.metric.direction)
        ctx.epoch_end = selector
        return selector


def data_parallel_plan(ctx: UnitContext) -> parallel.DataParallel | None:
    """The unit's batch split: over the process group when ``ctx.data_parallel`` (and a group of more than
    one rank is initialised), with accumulation when ``ctx.per_rank_batch`` caps the per-rank batch; None
    when neither applies. A split that cannot hold the spec's batch is a ``UserError`` naming it."""
    world, rank = parallel.world_of_group() if ctx.data_parallel else (1, 0)
    if world == 1 and ctx.per_rank_batch is None:
        return None
    protocol = ctx.protocol_spec
    if protocol.kind != "finetune":
        raise UserError(f"{ctx.spec.key}: protocol {ctx.protocol!r} is {protocol.kind!r}; data-parallel "
                        "fine-tuning and gradient accumulation are for finetune protocols (a frozen protocol "
                        "trains its head on cached features in one process)")
    return parallel.plan(protocol.schedule.batch_size, world, rank, ctx.per_rank_batch,
                         f"{ctx.spec.key}: protocols.{ctx.protocol}.schedule")


def unit_fingerprint(task: str, ctx: UnitContext) -> str:
    """What a resume checkpoint must match besides the loop's shape and starting weights: the spec (with
    every override), protocol, seed, sample limits, AMP and the pretrained backbone's weights."""
    return stable_hash({"task": task, "spec": ctx.spec.model_dump(mode="json"), "protocol": ctx.protocol,
                        "seed": ctx.seed, "max_train_samples": ctx.max_train_samples, "amp": str(ctx.amp),
                        "backbone": getattr(ctx.backbone, "name", type(ctx.backbone).__name__),
                        "backbone_weights": common.weights_digest(ctx.backbone)})


FINETUNED_BACKBONE = "finetuned_backbone.safetensors"
FINETUNED_HEAD = "finetuned_head.safetensors"


def save_finetuned(ctx: UnitContext, task: str, head: nn.Module,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--keep-finetuned``: the scored weights (after any best-epoch restore) in ``ctx.out_dir``: the
    backbone through the pretraining exporter (safetensors + JSON sidecar, ``load_backbone`` reads it) and
    the head as a plain safetensors state dict. Returns what the record's provenance names."""
    from safetensors.torch import save_file

    from saip_bench.pretrain.export import save_backbone
    from saip_bench.utils import file_sha256, umask_mode

    meta = {"source": "finetuned", "task": task, "spec": ctx.spec.key, "protocol": ctx.protocol,
            "seed": ctx.seed, "selection": ctx.protocol_spec.selection, "head": FINETUNED_HEAD,
            **(extra or {})}
    backbone_path = save_backbone(ctx.backbone, ctx.out_dir / FINETUNED_BACKBONE, meta)
    head_path = ctx.out_dir / FINETUNED_HEAD
    tmp = head_path.with_name(f".{head_path.name}.tmp")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in head.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": "saip-bench-head", "task": task, "spec": ctx.spec.key})
    os.chmod(tmp, umask_mode())
    tmp.replace(head_path)
    return {"backbone": str(backbone_path), "backbone_sidecar": str(backbone_path.with_suffix(".json")),
            "backbone_sha256": file_sha256(backbone_path), "head": str(head_path),
            "head_sha256": file_sha256(head_path)}


def set_final_norm(backbone: Backbone, enabled: bool) -> None:
    """Whether dense heads read block outputs through the backbone's final norm (``multi_level`` reads
    this flag; it is set per unit, so a later unit on the same backbone object does not inherit it)."""
    backbone.dense_final_norm = bool(enabled)  # type: ignore[attr-defined]


def get_task(name: str) -> Task:
    from saip_bench.discovery import import_submodules

    import_submodules("saip_bench.tasks")
    return TASKS.get(name)()
