"""The unit runner: plan -> (world, checkpoints) -> one task run per unit -> one atomic record per unit.

Why: one loop that every benchmark goes through, so every score carries the same provenance and cost,
a rerun resumes exactly where the last one stopped, and shards split the work without overlap.
Rank-aware under ``torchrun``: every rank runs the units (tasks may use the process group), rank 0
alone writes records and checkpoints' markers.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from saip_bench.bench.checkpoints import CheckpointCache, CheckpointInfo, Pretrainer
from saip_bench.bench.cost import CostMeter, backbone_cost
from saip_bench.bench.plan import FAST_KINDS, Unit, filter_units, plan_units, shard_units
from saip_bench.bench.presets import BenchPreset
from saip_bench.bench.provenance import code_revision, data_fingerprint, device_description, package_versions
from saip_bench.bench.schedule import (
    DATA_PARALLEL,
    DistInfo,
    DistributedFault,
    RankBoard,
    agree_on_failure,
    broadcast,
    spread,
    stop_message_on_signal,
    unit_mode,
)
from saip_bench.bench.store import OverwritePolicy, RecordStore, UnitStatus, needs_run
from saip_bench.cachedir import default_cache_dir
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import speed_settings
from saip_bench.errors import UserError
from saip_bench.specs import ResultRecord, TaskSpec, spec_sources, stable_hash
from saip_bench.tasks import parallel
from saip_bench.tasks.base import Task, UnitContext, UnitResult
from saip_bench.utils import atomic_write_text, bf16_is_fast, console, resolve_amp, seed_everything

log = logging.getLogger(__name__)

STATUS_GLYPH = {"run": "[yellow]·[/]", "done": "[green]✓[/]", "stale-kept": "[magenta]~[/]",
                "unsupported": "[dim]-[/]"}


@dataclass
class BenchHooks:
    """The parts of the world the runner calls; tests swap in fakes, the defaults are the real package."""

    specs: Mapping[str, TaskSpec] | None = None
    get_task: Callable[[str], Task] | None = None
    read_dataset: Callable[[str, Path, str | None], DatasetSplits] | None = None
    generate_world: Callable[[Path, str, int], Path] | None = None
    pretrainer: Pretrainer | None = None
    backbone_loader: Callable[[Path, tuple[int, int] | None], Any] | None = None
    method_unsupported: Callable[[str, str], str | None] | None = None

    def resolved_specs(self) -> Mapping[str, TaskSpec]:
        if self.specs is None:
            from saip_bench.specs import all_task_specs

            self.specs = all_task_specs()
        return self.specs

    def task(self, name: str) -> Task:
        if self.get_task is not None:
            return self.get_task(name)
        from saip_bench.tasks.base import get_task

        return get_task(name)

    def dataset(self, name: str, root: Path, version: str | None) -> DatasetSplits:
        if self.read_dataset is not None:
            return self.read_dataset(name, root, version)
        from saip_bench.data.readers import read_dataset

        return read_dataset(name, root, version=version)

    def world(self, out: Path, preset: str, seed: int) -> Path:
        if self.generate_world is not None:
            return Path(self.generate_world(out, preset, seed))
        from saip_bench.data.synth import generate_world

        return Path(generate_world(out, preset=preset, seed=seed, contact_sheets=False))

    def unsupported(self, method: str, backbone: str) -> str | None:
        if self.method_unsupported is not None:
            return self.method_unsupported(method, backbone)
        return default_method_unsupported(method, backbone)


def default_method_unsupported(method: str, backbone: str) -> str | None:
    """Why ``method`` cannot pretrain ``backbone`` (e.g. MAE on a ConvNet), or None."""
    from saip_bench.backbones import BACKBONES
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS

    import_submodules("saip_bench.pretrain.methods")
    if method not in METHODS or backbone not in BACKBONES:
        return None  # unknown names fail loudly later, with the registry's list of known names
    family = BACKBONES.meta(backbone).get("family")
    families = METHODS.get(method).supported_families
    if family not in families:
        return f"{method} supports {', '.join(sorted(families))} backbones, not {family}"
    return None


@dataclass
class BenchConfig:
    preset: BenchPreset
    run_dir: Path
    cache_dir: Path = field(default_factory=default_cache_dir)
    data_root: Path | None = None  # real data: <data_root>/<dataset>; synthetic: where the world lives
    pretrain_data: Path | None = None  # real pretraining images (ImageFolder-like)
    checkpoints: dict[tuple[str, str], Path] = field(default_factory=dict)
    shard: tuple[int, int] = (1, 1)
    limit: int | None = None
    overwrite: OverwritePolicy = OverwritePolicy.MISSING
    methods: Sequence[str] | None = None
    backbones: Sequence[str] | None = None
    tasks: Sequence[str] | None = None
    seeds: Sequence[int] | None = None
    device: str | None = None
    fail_fast: bool = False
    show_progress: bool = True
    visualize: int = 0  # prediction PNGs per unit (``saip-bench eval --visualize``)
    dataset_roots: dict[str, Path] = field(default_factory=dict)  # explicit per-dataset roots win
    world: Path | None = None  # an existing synthetic world used as is (never regenerated)
    loader_workers: int | None = None  # DataLoader num_workers per unit (None: the preset's eval.num_workers)
    compile: bool = False  # torch.compile the backbone's blocks in every unit (devices.compile_backbone)
    cfg_options: Sequence[str] = ()  # --cfg-options [task/dataset:]key.path=value (saip_bench/overrides.py)
    keep_finetuned: bool = False  # --keep-finetuned: each unit's final weights in its folder (tasks/base.py)
    unit_parallel: str = "auto"  # under torchrun: auto | spread | data (bench/schedule.py, ``unit_mode``)
    per_rank_batch: int | None = None  # fine-tunes: cap per rank, the rest gradient accumulation


@dataclass
class PlannedUnit:
    unit: Unit
    status: str  # run | done | stale-kept | unsupported
    reason: str = ""


@dataclass
class BenchReport:
    planned: list[PlannedUnit]
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


class BenchRunner:
    def __init__(self, config: BenchConfig, hooks: BenchHooks | None = None) -> None:
        self.config = config
        self.preset = config.preset
        self.hooks = hooks or BenchHooks()
        self.dist = DistInfo.from_env()
        self.store = RecordStore(Path(config.run_dir) / "records")
        self.cache = CheckpointCache(Path(config.cache_dir) / "checkpoints", pretrainer=self.hooks.pretrainer,
                                     loader=self.hooks.backbone_loader, is_writer=self.dist.is_main)
        # published checkpoints of the preset (``external:``, issue 24); --checkpoint entries win
        self.external = self.preset.external_checkpoints()
        self.cache.overrides = {**{k: v for k, v in self.external.items() if v is not None},
                                **config.checkpoints}
        self._world: Path | None = None
        self._fingerprints: dict[str, str] = {}
        self._datasets: dict[tuple[str, str | None], DatasetSplits] = {}
        self._backbone_costs: dict[tuple[str, tuple[int, int]], dict[str, float]] = {}
        self.cfg_applied: dict[str, list[str]] = {}  # spec key -> canonical overrides applied to it
        if config.cfg_options:
            self._apply_cfg_options()

    def _apply_cfg_options(self) -> None:
        """Apply ``--cfg-options`` to the specs of the plan and validate them now: a bad key or value
        stops the run before any world, checkpoint or unit is built."""
        from saip_bench.bench.plan import select_specs
        from saip_bench.overrides import apply_to_specs, parse_overrides

        specs = self.hooks.resolved_specs()
        plan = [spec.key for spec in select_specs(self.preset, specs)]
        overridden, self.cfg_applied = apply_to_specs(specs, parse_overrides(self.config.cfg_options), plan)
        self.hooks = replace(self.hooks, specs=overridden)

    # ----------------------------------------------------------------------------------- planning
    def units(self, sharded: bool = True) -> list[Unit]:
        config = self.config
        units = plan_units(self.preset, self.hooks.resolved_specs())
        if self.cfg_applied:  # overridden specs: their units get their own identity (Unit.variant)
            from saip_bench.overrides import variant

            units = [replace(u, variant=variant(self.cfg_applied[u.spec_key]))
                     if u.spec_key in self.cfg_applied else u for u in units]
        units = filter_units(units, config.methods, config.backbones, config.tasks, config.seeds)
        return shard_units(units, *config.shard) if sharded else units

    @property
    def device(self) -> torch.device:
        if self.config.device:
            return torch.device(self.config.device)
        if torch.cuda.is_available():
            return torch.device("cuda", self.dist.local_rank)
        return torch.device("cpu")

    @property
    def eval_amp(self) -> bool:
        """The preset's AMP request as this device honours it (recorded and part of the unit key)."""
        return resolve_amp(self.preset.eval.amp, self.device)

    @property
    def bf16_native(self) -> bool:
        """Whether pretraining here honours a preset's bf16 request (part of the checkpoint key)."""
        return bf16_is_fast(self.device.type)

    def world_root(self) -> Path:
        """The synthetic world (generated once, then reused by content key)."""
        if self._world is None and self.config.world is not None:
            if not (Path(self.config.world) / ".world.json").exists():
                raise UserError(f"--world {self.config.world}: not a synthetic world (no .world.json)")
            self._world = Path(self.config.world)
        if self._world is None:
            world = self.config.data_root or Path(self.config.cache_dir) / "world"
            out = Path(world) / f"{self.preset.synth_preset}-seed{self.preset.synth_seed}"
            if self.dist.is_main:
                self._world = self.hooks.world(out, self.preset.synth_preset, self.preset.synth_seed)
            self.dist.barrier()
            self._world = self._world or out
        return self._world

    def dataset_root(self, dataset: str) -> Path:
        if dataset in self.config.dataset_roots:
            return Path(self.config.dataset_roots[dataset])
        if self.preset.data == "synthetic":
            return self.world_root() / dataset
        if self.config.data_root is not None:
            return Path(self.config.data_root) / dataset
        from saip_bench.data.readers import resolve_root

        return Path(resolve_root(dataset, None))

    def pretrain_root(self) -> Path | None:
        if self.config.pretrain_data is not None:
            return Path(self.config.pretrain_data)
        if self.preset.data == "synthetic":
            return self.world_root() / "pretrain"
        return self.config.pretrain_data

    @property
    def loader_workers(self) -> int:
        chosen = self.config.loader_workers
        return self.preset.eval.num_workers if chosen is None else chosen

    def fingerprint(self, name: str, root: Path | None) -> str:
        """The data fingerprint of ``root``; for the pretraining pool without its ``keypoints.json`` (only
        HAP reads it, and ``pool_fingerprint`` adds it to HAP's key: making keypoints must not make every
        other method's checkpoint stale)."""
        if root is None:
            return "none"
        if name not in self._fingerprints:
            from saip_bench.pretrain.keypoint_file import KEYPOINTS_FILE

            exclude = (KEYPOINTS_FILE,) if name == "pretrain" else ()
            self._fingerprints[name] = self._on_rank0(lambda: data_fingerprint(root, exclude=exclude))
        return self._fingerprints[name]

    def _on_rank0(self, compute: Callable[[], str]) -> str:
        """Rank 0 computes, the others receive it (every rank reaches this call)."""
        return str(broadcast(compute() if self.dist.is_main else None, self.dist))

    def pool_fingerprint(self, method: str, root: Path | None) -> str:
        """What ``method``'s checkpoint key knows of the pool: its fingerprint, plus the content of
        ``keypoints.json`` for a method that reads it (HAP)."""
        base = self.fingerprint("pretrain", root)
        if root is None or not self._needs_keypoints(method):
            return base
        from saip_bench.pretrain.keypoint_file import keypoints_path
        from saip_bench.utils import file_sha256

        key = "pretrain-keypoints"
        if key not in self._fingerprints:
            path = keypoints_path(root)
            self._fingerprints[key] = self._on_rank0(
                lambda: file_sha256(path)[:16] if path.is_file() else "missing")
        return f"{base}+keypoints-{self._fingerprints[key]}"

    @staticmethod
    def _needs_keypoints(method: str) -> bool:
        from saip_bench.discovery import import_submodules
        from saip_bench.pretrain.base import METHODS

        import_submodules("saip_bench.pretrain.methods")
        return method in METHODS and bool(getattr(METHODS.get(method), "needs_keypoints", False))

    def pretrain_seed(self, unit: Unit) -> int:
        seed = self.preset.pretrain.seed
        return unit.seed if seed == "unit" else int(seed)

    def checkpoint_key(self, unit: Unit) -> str:
        from saip_bench.bench.checkpoints import checkpoint_key

        if (unit.method, unit.backbone) in self.cache.overrides:
            return "user:" + str(self.cache.overrides[(unit.method, unit.backbone)].resolve())
        root = self.pretrain_root()
        settings = self.preset.pretrain
        return checkpoint_key(unit.method, unit.backbone, settings.preset, self.pretrain_seed(unit),
                              settings.steps, self.pool_fingerprint(unit.method, root), self.bf16_native)

    def unit_key(self, unit: Unit) -> str:
        """Hash of every input that defines a unit's result; resume compares records against it."""
        spec = self.hooks.resolved_specs()[unit.spec_key]
        return stable_hash({
            "identity": unit.identity(),
            "spec": stable_hash(spec),
            "checkpoint": self.checkpoint_key(unit),
            "data": self.fingerprint(unit.dataset, self.dataset_root(unit.dataset)),
            "limit": self.config.limit,
            "amp": self.eval_amp,
        })

    def plan(self, resolve_inputs: bool = True, sharded: bool = True) -> list[PlannedUnit]:
        """Each unit with what will happen to it. ``resolve_inputs=False`` (dry runs) judges records by
        existence only, so showing a plan never generates the world or hashes data."""
        planned = []
        for unit in self.units(sharded):
            pair = (unit.method, unit.backbone)
            if pair in self.external:  # a published checkpoint: no pretraining method to support it
                reason = None if pair in self.cache.overrides else (
                    f"waiting for its checkpoint: give --checkpoint {unit.method}/{unit.backbone}=FILE "
                    "(a timm / PyTorch / MAE / HAP / PATH checkpoint)")
            else:
                reason = self.hooks.unsupported(unit.method, unit.backbone) or self.waiting_for_inputs(unit)
            if reason:
                planned.append(PlannedUnit(unit, "unsupported", reason))
                continue
            if resolve_inputs:
                status = self.store.status(unit, self.unit_key(unit))
            else:
                status = UnitStatus.MISSING if not self.store.path(unit).exists() else UnitStatus.DONE
            if not needs_run(status, self.config.overwrite):
                planned.append(PlannedUnit(unit, "done" if status is UnitStatus.DONE else "stale-kept"))
            else:
                planned.append(PlannedUnit(unit, "run", status.value))
        return planned

    def waiting_for_inputs(self, unit: Unit) -> str | None:
        """A method whose pretraining input the pool lacks (HAP without ``keypoints.json``): its units wait
        in the plan with the command that makes the input, instead of failing when pretraining starts."""
        root = self.config.pretrain_data  # the synthetic world always has keypoints (and is not made here)
        if root is None or (unit.method, unit.backbone) in self.cache.overrides:
            return None
        from saip_bench.pretrain.pseudo_keypoints import waiting_for_keypoints

        return waiting_for_keypoints(unit.method, root)

    # ----------------------------------------------------------------------------------- running
    def pretrain_only(self) -> list[CheckpointInfo]:
        """Build the checkpoints that the units still to run need; ``--shard`` splits the distinct
        checkpoints (not the units), so parallel workers never wait on one another's pretraining."""
        self.dist.init()
        needed: dict[str, Unit] = {}
        for item in self.plan(sharded=False):
            if item.status == "run":
                needed.setdefault(self.checkpoint_key(item.unit), item.unit)
        mine = shard_units(list(needed.values()), *self.config.shard)
        infos = []
        for unit in mine:
            seed = self.pretrain_seed(unit)
            log.info(f"pretraining checkpoint for {unit.method}/{unit.backbone} (seed {seed})")
            infos.append(self.checkpoint(unit))
        return infos

    def check_roots(self) -> None:
        """Real data: every dataset of the plan must be there before hours of work start."""
        if self.preset.data != "real":
            return
        missing = sorted({u.dataset for u in self.units() if not self.dataset_root(u.dataset).is_dir()})
        if missing:
            where = ", ".join(str(self.dataset_root(d)) for d in missing)
            raise UserError(f"dataset folder(s) not found: {where} (layouts: docs/layouts.md; "
                            "narrow the plan with --tasks)")

    def run(self) -> BenchReport:
        self.dist.init()
        self.check_roots()
        planned = self.plan()
        report = BenchReport(planned)
        if self.dist.is_main and log.isEnabledFor(logging.INFO):  # -q hides the plan
            console.print(plan_table(planned, self.preset, self.config))
        todo = [p.unit for p in planned if p.status == "run"]
        if not todo:
            log.info("nothing to run: every unit of the plan has a matching record")
            return report
        if self.dist.world_size == 1:
            self._run_units(todo, report)
        else:
            self._run_distributed(todo, report)
        if self.dist.is_main:
            log.info(f"{len(report.written)} record(s) written, {len(report.failed)} failed "
                     f"-> {self.store.directory}")
        return report

    def _run_units(self, todo: list[Unit], report: BenchReport, board: RankBoard | None = None) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        visible = self.config.show_progress and self.dist.is_main
        with Progress(*columns, console=console, disable=not visible) as progress:
            overall = progress.add_task("[bold]benchmark units", total=len(todo))
            for unit in todo:
                stage = progress.add_task(f"{unit.uid}: start", total=4)
                if board is not None:
                    board.set_unit(f"unit {unit.uid}")
                try:
                    path = self.run_unit(unit, lambda text, s=stage, uid=unit.uid: progress.update(
                        s, description=f"{uid}: {text}", advance=1))
                    if path is not None:
                        report.written.append(path)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:
                    report.failed[unit.uid] = f"{type(exc).__name__}: {exc}"
                    self._log_failure(unit)
                    if self.config.fail_fast:
                        raise
                    log.error(f"unit {unit.uid} failed: {report.failed[unit.uid]}")
                finally:
                    progress.remove_task(stage)
                    progress.advance(overall)

    def _run_distributed(self, todo: list[Unit], report: BenchReport) -> None:
        """Under torchrun (the rules: saip_bench/bench/schedule.py): the shared pretrainings with every
        rank, then this rank's share of the units, then rank 0 gathers the reports from files."""
        board = RankBoard(Path(self.config.run_dir), self.dist)
        board.start()
        restore = stop_message_on_signal(board)
        try:
            self._shared_phase(todo, board)
            together = [unit for unit in todo if self.unit_mode(unit) == DATA_PARALLEL]
            rest = [unit for unit in todo if unit not in together]
            if self.dist.is_main:
                world = self.dist.world_size
                shares = [len(spread(rest, DistInfo(r, world))) for r in range(world)]
                log.info(f"schedule: {world} ranks (--unit-parallel {self.config.unit_parallel}); "
                         f"{len(together)} unit(s) data-parallel over all ranks, one after another; "
                         f"{len(rest)} spread one per process (rank r runs units r, r+{world}, ...): "
                         + ", ".join(f"rank {r}: {n}" for r, n in enumerate(shares)))
            self._run_together(together, report, board)
            self._run_units(spread(rest, self.dist), report, board)
            board.finish([str(p) for p in report.written], report.failed)
            if self.dist.is_main:
                every = board.gather(lambda ranks, units: log.info(
                    "waiting for " + ", ".join(f"rank {r} ({units[r]})" for r in ranks)))
                report.written = [Path(p) for r in every for p in r["written"]]
                report.failed = {uid: why for r in every for uid, why in r["failed"].items()}
                if report.failed:  # this rank will exit non-zero: let the others leave first
                    board.wait_for_leavers()
            else:
                board.leave()
        finally:
            board.stop()
            restore()

    def unit_mode(self, unit: Unit) -> str:
        """Spread or data-parallel under torchrun (the rule: ``schedule.unit_mode``)."""
        schedule_ = self.hooks.resolved_specs()[unit.spec_key].protocols[unit.protocol]
        return unit_mode(schedule_.kind, schedule_.schedule.batch_size, schedule_.schedule.max_steps,
                         self.dist.world_size, self.device.type == "cuda", self.config.unit_parallel)

    def _run_together(self, units: list[Unit], report: BenchReport, board: RankBoard) -> None:
        """Data-parallel units: every rank runs each one, in plan order, so their collectives pair up.
        A failure reaches every rank (the task's agreement, tasks/parallel.py) and is reported once."""
        for unit in units:
            board.set_unit(f"unit {unit.uid} (data-parallel)")
            try:
                path = self.run_unit(unit, data_parallel=True)
                if path is not None and self.dist.is_main:  # the record rank 0 wrote, listed once
                    report.written.append(path)
            except (KeyboardInterrupt, SystemExit, DistributedFault):
                raise
            except Exception as exc:
                report.failed[unit.uid] = f"{type(exc).__name__}: {exc}"
                if self.dist.is_main:
                    self._log_failure(unit)
                    log.error(f"unit {unit.uid} failed: {report.failed[unit.uid]}")
                if self.config.fail_fast:
                    raise

    def _shared_phase(self, todo: list[Unit], board: RankBoard) -> None:
        """Every checkpoint the units need, each pretrained once by all ranks together (DDP), in the same
        order on every rank so the collectives pair up; the ranks agree on each outcome (a failure on
        some ranks only stops the run: see ``agree_on_failure``). Then every fingerprint a unit asks for,
        while all ranks are here (rank 0 reads, the others receive)."""
        needed: dict[str, Unit] = {}
        for unit in todo:
            needed.setdefault(self.checkpoint_key(unit), unit)
        for unit in needed.values():
            board.set_unit(f"the pretraining of {unit.method}/{unit.backbone}")
            error: Exception | None = None
            try:
                self.checkpoint(unit)
            except (KeyboardInterrupt, SystemExit):
                raise
            except DistributedFault:
                raise
            except Exception as exc:  # remembered by the cache: its units fail with this reason, once
                error = exc
            if agree_on_failure(error is not None, f"pretraining {unit.method}/{unit.backbone}", self.dist):
                log.error(f"rank {self.dist.rank}: pretraining {unit.method}/{unit.backbone} failed: {error}")
        board.set_unit("the data fingerprints")
        for unit in todo:
            self.fingerprint(unit.dataset, self.dataset_root(unit.dataset))

    def _log_failure(self, unit: Unit) -> None:
        failure = Path(self.config.run_dir) / "failures" / f"{unit.uid}.txt"  # by the rank that ran it
        atomic_write_text(failure, traceback.format_exc())

    def dataset(self, spec: TaskSpec) -> DatasetSplits:
        key = (spec.dataset, spec.dataset_version)
        if key not in self._datasets:
            self._datasets[key] = self.hooks.dataset(spec.dataset, self.dataset_root(spec.dataset),
                                                     spec.dataset_version)
        return self._datasets[key]

    def checkpoint(self, unit: Unit) -> CheckpointInfo:
        root = self.pretrain_root()
        settings = self.preset.pretrain
        pool = self.pool_fingerprint(unit.method, root)
        return self.cache.ensure(unit.method, unit.backbone, settings.preset, self.pretrain_seed(unit),
                                 settings.steps, root, pool, self.bf16_native)

    def run_unit(self, unit: Unit, stage: Callable[[str], None] = lambda text: None,
                 data_parallel: bool = False) -> Path | None:
        """Run one unit and write its record; returns the record path. ``data_parallel``: every rank
        calls this for the same unit (``_run_together``); rank 0 claims it and writes the record, and
        each step that may fail on one rank only ends in an agreement, so no rank waits alone."""
        spec = self.hooks.resolved_specs()[unit.spec_key]
        ranks = parallel.Ranks(self.dist.world_size, self.dist.rank) if data_parallel else None
        # issue 27, one owner per unit: None = ours (store.py, locks.py)
        busy = parallel.on_rank0(lambda: self.store.claim(unit), f"claiming unit {unit.uid}", ranks)
        if busy is not None:
            log.warning(f"unit {unit.uid} skipped: {busy}")
            return None
        stage("pretrained checkpoint")
        info = self.checkpoint(unit)  # every rank alike: the cache agrees on its outcome itself

        def load() -> tuple[DatasetSplits, Any, tuple[str, tuple[int, ...]]]:
            stage("data")
            data = self.dataset(spec)
            stage("task")
            backbone = self.cache.load(info, load_size(unit.backbone, tuple(spec.input_size)))
            size_key = (unit.backbone, tuple(spec.input_size))  # architecture cost: same for every method
            if size_key not in self._backbone_costs:
                self._backbone_costs[size_key] = backbone_cost(backbone, tuple(spec.input_size), self.device)
            return data, backbone, size_key

        data, backbone, size_key = parallel.agreed(load, f"unit {unit.uid}: data and backbone", ranks)
        limit = self.config.limit
        finetune = spec.protocols[unit.protocol].kind == "finetune"
        ctx = UnitContext(
            spec=spec, protocol=unit.protocol, backbone=backbone, data=data,
            out_dir=Path(self.config.run_dir) / "units" / unit.uid, seed=unit.seed, device=self.device,
            amp=self.eval_amp, num_workers=self.loader_workers, max_train_samples=limit,
            max_eval_samples=limit, cache_dir=Path(self.config.cache_dir) / "features" / info.key,
            show_progress=self.config.show_progress and self.dist.is_main, visualize=self.config.visualize,
            keep_finetuned=self.config.keep_finetuned, data_parallel=data_parallel,
            per_rank_batch=self.config.per_rank_batch if finetune else None, compile=self.config.compile,
        )
        seed_everything(unit.seed)
        with CostMeter(self.device) as meter:
            result = self.hooks.task(unit.task).run(ctx)
        stage("record")
        cost = {**meter.cost, **self._backbone_costs[size_key]}
        # one writer: the process that ran a spread unit, rank 0 of a data-parallel one
        return parallel.on_rank0(lambda: self.store.write(self.build_record(unit, spec, info, result, cost)),
                                 f"unit {unit.uid}: writing its record", ranks)

    def build_record(self, unit: Unit, spec: TaskSpec, info: CheckpointInfo, result: UnitResult,
                     cost: dict[str, float]) -> ResultRecord:
        protocol = spec.protocols[unit.protocol]
        batch = protocol.schedule.batch_size
        effective_batch = result.extra.get("effective_batch", batch)
        provenance = {
            "unit_key": self.unit_key(unit),
            "spec_hash": stable_hash(spec),
            "spec_version": spec.version,
            "protocol_kind": protocol.kind,
            "track": "fast" if protocol.kind in FAST_KINDS else "finetune",
            "pretrain": info.provenance(),
            "code_revision": code_revision(),
            "data": {
                "source": self.preset.data,
                "synth_preset": self.preset.synth_preset if self.preset.data == "synthetic" else None,
                "version": result.extra.get("dataset_version", spec.dataset_version),
                "fingerprint": self.fingerprint(unit.dataset, self.dataset_root(unit.dataset)),
                "pretrain_fingerprint": self.pool_fingerprint(unit.method, self.pretrain_root()),
            },
            "packages": package_versions(),
            "seeds": {"eval": unit.seed, "pretrain": self.pretrain_seed(unit),
                      "planned": list(self.config.seeds or self.preset.seeds)},
            # processes that trained this unit together (1 for a spread unit), and the batch split
            "world_size": int(result.extra.get("world_size", 1)),
            "launch_world_size": self.dist.world_size,
            "batch_size": batch,
            "per_rank_batch": int(result.extra.get("per_rank_batch", batch)),
            "accumulation": int(result.extra.get("accumulation", 1)),
            "effective_batch": effective_batch,
            "device": device_description(self.device),
            "amp": self.eval_amp,
            "speed": speed_settings(self.device, compiled=self.config.compile),
            "loader_workers": self.loader_workers,  # single-person augmentation draws per worker
            "specs": spec_sources(),  # built-in folders (package or checkout) and any $SAIP_SPECS folder
            "bench_preset": {"name": self.preset.name, "hash": self.preset.hash},
            "limit": self.config.limit,
            "predictions": [str(p) for p in result.predictions],
            **({"finetuned": result.extra["finetuned"]} if "finetuned" in result.extra else {}),
            "task_details": task_details(result.extra),
            "cfg_options": self.cfg_applied.get(unit.spec_key, []),  # as applied (canonical key=JSON)
        }
        return ResultRecord(
            identity=unit.identity(),
            scores={k: float(v) for k, v in result.scores.items()},
            main_metric=result.main_metric,
            main_score=float(result.main_score),
            direction=spec.metric.direction,
            provenance=provenance,
            cost=cost,
            n_samples=result.n_samples,
            limited=self.config.limit is not None,
            created_at=_now(),
            uncertainty=result.uncertainty,  # bootstrap intervals (issue 26): filled by Task.run
        )


def task_details(extra: dict[str, Any]) -> dict[str, Any]:
    """What a task reports about how it scored (e.g. pose ``box_source``, input size, steps): the plain
    scalars and short lists of ``UnitResult.extra``; loss histories and other bulk stay out of records."""
    plain = (str, int, float, bool, type(None))
    details: dict[str, Any] = {}
    for key, value in sorted(extra.items()):
        if isinstance(value, plain):
            details[key] = value
        elif isinstance(value, list | tuple) and len(value) <= 8 and all(isinstance(v, plain) for v in value):
            details[key] = list(value)
    return details


def load_size(backbone: str, input_size: tuple[int, int]) -> tuple[int, int]:
    """Size the backbone is built at for a task: ViTs pad inputs to whole patches, so their position
    embedding is resized once to the padded grid (sides rounded up to a multiple of the patch)."""
    from saip_bench.backbones import BACKBONES

    if backbone in BACKBONES and BACKBONES.meta(backbone).get("family") == "vit":
        patch = 16
        return (-(-input_size[0] // patch) * patch, -(-input_size[1] // patch) * patch)
    return input_size


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_table(planned: Sequence[PlannedUnit], preset: BenchPreset, config: BenchConfig) -> Table:
    """Rows: task/dataset (protocol); columns: method/backbone; cells: one glyph per seed."""
    entries = list(dict.fromkeys((p.unit.method, p.unit.backbone) for p in planned))
    datasets = list(dict.fromkeys((p.unit.task, p.unit.dataset, p.unit.protocol) for p in planned))
    cells: dict[tuple, list[str]] = {}
    for item in planned:
        key = (item.unit.task, item.unit.dataset, item.unit.protocol, item.unit.method, item.unit.backbone)
        cells.setdefault(key, []).append(STATUS_GLYPH[item.status])
    counts = {s: sum(p.status == s for p in planned) for s in STATUS_GLYPH}
    shard = f", shard {config.shard[0]}/{config.shard[1]}" if config.shard != (1, 1) else ""
    limit = f", [red]--limit {config.limit} (records marked limited)[/]" if config.limit else ""
    seeds = sorted({p.unit.seed for p in planned})
    title = (f"bench plan '{preset.name}' ({preset.data} data, protocol {preset.protocol}, seeds "
             f"{','.join(map(str, seeds))}{shard}{limit}): {counts['run']} to run, {counts['done']} done, "
             f"{counts['stale-kept']} stale kept, {counts['unsupported']} unsupported")
    caption = "· to run  ✓ done  ~ stale kept (--overwrite never)  - unsupported; one glyph per seed"
    waiting = dict.fromkeys(f"{p.unit.method}/{p.unit.backbone}: {p.reason}" for p in planned
                            if p.status == "unsupported" and p.reason.startswith("waiting"))
    caption += "".join(f"\n{line}" for line in waiting)  # external entries whose file is to be named
    table = Table(title=title, caption=caption)
    if len(entries) <= 8:  # rows: datasets, columns: method/backbone
        table.add_column("dataset (protocol)", no_wrap=True)
        for method, backbone in entries:
            table.add_column(f"{method}\n{backbone}", justify="center", no_wrap=True)
        for task, dataset, protocol in datasets:
            table.add_row(f"{dataset} ({protocol})",
                          *("".join(cells.get((task, dataset, protocol, m, b), [])) for m, b in entries))
        return table
    table.add_column("method/backbone", no_wrap=True)  # many entries: rows are entries
    for _, dataset, _ in datasets:
        table.add_column(dataset[:6], justify="center", no_wrap=True)
    for method, backbone in entries:
        table.add_row(f"{method}/{backbone}", *("".join(cells.get((t, d, p, method, backbone), []))
                                                for t, d, p in datasets))
    return table


def run_bench(config: BenchConfig, hooks: BenchHooks | None = None) -> BenchReport:
    """Plan and run; raises ``UserError`` for a plan with nothing selected."""
    runner = BenchRunner(config, hooks)
    if not runner.units():
        raise UserError("the plan selects no unit (check --shard and the filters)")
    return runner.run()
