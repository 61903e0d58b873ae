"""Validated spec models: task specs, dataset cards, result records; YAML io and stable hashing.

Why: specs are data (ARCHITECTURE.md §2). Closed vocabularies and ``extra="forbid"`` turn a typo in a
YAML file into an error that names the file and field, instead of a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from saip_bench.errors import SpecError, UserError

TaskName = Literal[
    "reid", "t2i_retrieval", "attributes", "pose", "wholebody", "parsing", "multi_parsing",
    "detection", "fashion",
]
DatasetName = Literal[
    "market1501", "msmt17", "cuhk_pedes", "icfg_pedes", "pa100k", "peta", "coco", "coco_wholebody",
    "lip", "cihp", "crowdhuman", "fashionpedia",
]
ProtocolKind = Literal["finetune", "linear", "frozen"]
Direction = Literal["max", "min"]

TASK_NAMES: tuple[str, ...] = TaskName.__args__  # type: ignore[attr-defined]
DATASET_NAMES: tuple[str, ...] = DatasetName.__args__  # type: ignore[attr-defined]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


NoDecayKind = Literal["bias", "norm", "pos_embed", "cls_token"]
Interpolation = Literal["bilinear", "bicubic"]
SelectionPolicy = Literal["final", "best_val", "best_test"]
SELECTION_POLICIES: tuple[str, ...] = SelectionPolicy.__args__  # type: ignore[attr-defined]

# Which checkpoint-selection policies each task implements (``Task.selections`` says the same; a test
# keeps the two equal). ``best_test`` needs a cheap per-epoch evaluation of the reported split: the
# single-person tasks and top-down pose have one; detection, fashion and parsing score only at the end.
# ``best_val`` needs a held-out split that no spec trains without yet.
SELECTION_SUPPORT: dict[str, tuple[str, ...]] = {
    **{task: ("final",) for task in TASK_NAMES},
    **{task: ("final", "best_test") for task in ("reid", "t2i_retrieval", "attributes", "pose", "wholebody")},
}
# Tasks whose image loaders honour ``Protocol.resize`` (the dense tasks warp crops with their own
# bilinear affine pipelines, as every dense recipe does).
RESIZE_TASKS = ("reid", "t2i_retrieval", "attributes")


class ParamGroups(StrictModel):
    """Which parameters skip weight decay and which get an LR multiplier (the recipes' optimizer groups).

    Why data: recipes differ (TransReID decays every parameter and doubles the bias LR; mmpose exempts
    biases, norms and the position embedding), and a benchmark must say which one it ran.
    """

    no_decay: list[NoDecayKind] = Field(
        default_factory=lambda: ["bias", "norm", "pos_embed", "cls_token"],
        description="bias: names ending in 'bias'; norm: other 1-D tensors (norm and BN scales, layer "
                    "scales); pos_embed; cls_token (also register/mask tokens)",
    )
    bias_lr: float = Field(gt=0, default=1.0, description="LR multiplier of every bias")
    lr_mult: dict[str, float] = Field(
        default_factory=dict,
        description="fnmatch pattern on 'backbone.<name>' / 'head.<name>' -> LR multiplier (the product "
                    "when several match; a matched bias takes it instead of bias_lr), e.g. "
                    "{'head.*': 10} or {'head.classifier.*': 5}",
    )

    @model_validator(mode="after")
    def _positive_multipliers(self) -> ParamGroups:
        bad = {k: v for k, v in self.lr_mult.items() if not v > 0}
        if bad:
            raise ValueError(f"lr_mult values must be > 0: {bad}")
        return self


class Schedule(StrictModel):
    """Optimisation schedule of one protocol; numbers as in the paper's downstream configs."""

    epochs: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0, default=0.0)
    warmup_epochs: float = Field(ge=0, default=0.0)
    scheduler: Literal["cosine", "step", "plateau", "constant", "sgdr"] = "cosine"
    milestones: list[float] = Field(default_factory=list)
    layer_decay: float | None = None
    grad_clip: float | None = None
    max_steps: int | None = Field(default=None, gt=0)
    # Recipe details (issue 22); the defaults are what every protocol did before they existed.
    eps: float | None = Field(default=None, gt=0, description="Adam(W) eps; None = torch's 1e-8")
    betas: tuple[float, float] | None = None
    warmup_steps: int | None = Field(
        default=None, ge=0, description="warm-up in optimiser steps (mmcv's iteration warm-up); wins over "
                                        "warmup_epochs")
    warmup_start: float | None = Field(
        default=None, gt=0, le=1,
        description="LR factor of the first warm-up step, ramping linearly to 1; None = 1/warm-up steps")
    warmup_prefix: bool = Field(
        default=True, description="False: the cosine is measured from step 0, warm-up included (timm's "
                                  "warmup_prefix=False, as TransReID)")
    min_lr: float = Field(default=0.0, ge=0, lt=1, description="cosine floor as a fraction of lr")
    # SGDR (cosine with warm restarts, SCHP's schedule): scheduler "sgdr" needs both epoch fields
    cycle_start_epochs: float | None = Field(default=None, gt=0, description="sgdr: epoch of the first "
                                                                             "restart")
    cycle_epochs: float | None = Field(default=None, gt=0, description="sgdr: epochs per restart cycle")
    cycle_lr: float = Field(default=0.5, gt=0, le=1, description="sgdr: LR factor at each restart")
    # plateau: torch's ReduceLROnPlateau on a value the task measures after every epoch (attributes: the
    # test-split loss, as Rethinking-of-PAR); it scales the warm-up/constant LR
    plateau_factor: float = Field(default=0.1, gt=0, lt=1, description="plateau: LR factor per reduction")
    plateau_patience: int = Field(default=4, ge=0, description="plateau: epochs without improvement allowed")
    groups: ParamGroups = Field(default_factory=ParamGroups)

    @model_validator(mode="after")
    def _sgdr_cycles(self) -> Schedule:
        if self.scheduler == "sgdr" and (self.cycle_start_epochs is None or self.cycle_epochs is None):
            raise ValueError("scheduler 'sgdr' needs cycle_start_epochs and cycle_epochs")
        return self


class ResizeRule(StrictModel):
    """Interpolation of the plain image resize at train and at test time."""

    train: Interpolation = "bilinear"
    test: Interpolation = "bilinear"


class Deviation(StrictModel):
    """One remaining difference between our protocol and the authors' recipe, and why it stays."""

    what: str
    recipe: str
    ours: str
    reason: str


class Recipe(StrictModel):
    """The authors' downstream recipe in words, for what the validated fields cannot hold.

    The optimizer, groups, schedule, batch, drop-path, resize and selection are read from the protocol's
    own fields (``saip-bench describe`` joins both), so a number is never written twice.
    """

    source: str
    head: str
    input: str
    augmentation: str
    losses: str
    test: str
    deviations: list[Deviation] = Field(default_factory=list)


class Protocol(StrictModel):
    kind: ProtocolKind
    schedule: Schedule
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    drop_path: float = Field(default=0.0, ge=0, lt=1, description="stochastic depth rate (finetune only), "
                                                                  "linear over the blocks as timm does")
    resize: ResizeRule = Field(default_factory=ResizeRule)
    final_norm: bool = Field(default=False, description="dense heads read the last block through the "
                                                        "backbone's final LayerNorm (as mmpose's ViT)")
    selection: SelectionPolicy = Field(
        default="final", description="which epoch's weights are scored: the last, the best on a held-out "
                                     "val split, or the best on the reported split (the authors' practice)")
    recipe: Recipe | None = None


class MetricSpec(StrictModel):
    main: str
    direction: Direction = "max"
    report: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _main_is_reported(self) -> MetricSpec:
        if self.report and self.main not in self.report:
            raise ValueError(f"main metric {self.main!r} must be listed in report {self.report}")
        return self


class HeadSpec(StrictModel):
    type: str
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(StrictModel):
    """One task x dataset benchmark (``tasks/<task>/<dataset>.yaml``)."""

    task: TaskName
    dataset: DatasetName
    version: str = "1"
    dataset_version: str | None = None  # e.g. "zs" for PETAzs, "v2" for MSMT17; None = card default
    description: str = ""
    splits: dict[str, str]
    input_size: tuple[int, int]
    head: HeadSpec
    metric: MetricSpec
    protocols: dict[str, Protocol]
    default_protocol: str
    expected_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_protocol_exists(self) -> TaskSpec:
        if self.default_protocol not in self.protocols:
            raise ValueError(
                f"default_protocol {self.default_protocol!r} not in protocols {sorted(self.protocols)}"
            )
        return self

    @model_validator(mode="after")
    def _protocol_settings_supported(self) -> TaskSpec:
        """A policy or resize rule the task cannot honour is an error here, not a silent no-op later."""
        for name, protocol in self.protocols.items():
            supported = SELECTION_SUPPORT.get(self.task, ("final",))
            if protocol.selection not in supported:
                raise ValueError(
                    f"protocols.{name}.selection: {protocol.selection!r} is not supported for task "
                    f"{self.task!r} yet (supported: {', '.join(supported)})"
                )
            if self.task not in RESIZE_TASKS and protocol.resize != ResizeRule():
                raise ValueError(
                    f"protocols.{name}.resize: task {self.task!r} resizes with its own bilinear pipeline; "
                    f"only {', '.join(RESIZE_TASKS)} honour a resize rule"
                )
        return self

    @property
    def key(self) -> str:
        return f"{self.task}/{self.dataset}"


class DatasetVersion(StrictModel):
    layout: list[str] = Field(description="paths (relative to the root) that must exist")
    splits: dict[str, dict[str, int]] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict, description="dataset-level counts (attributes, ...)")
    notes: str = ""


class DatasetCard(StrictModel):
    """What a dataset is and how it looks on disk (``datasets/<name>.yaml``)."""

    name: DatasetName
    official_name: str
    tasks: list[TaskName]
    reader: str
    default_version: str
    versions: dict[str, DatasetVersion]
    citation: str
    licence: str
    homepage: str = ""
    how_to_obtain: str
    notes: str = ""

    @model_validator(mode="after")
    def _default_version_exists(self) -> DatasetCard:
        if self.default_version not in self.versions:
            raise ValueError(f"default_version {self.default_version!r} not in versions")
        return self


class RecordIdentity(StrictModel):
    method: str
    backbone: str
    task: str
    dataset: str
    protocol: str
    seed: int


class Uncertainty(StrictModel):
    """Percentile-bootstrap intervals of a record's scores over its test samples (queries or images):
    predictions resampled with replacement, never retrained (``saip_bench/metrics/bootstrap.py``)."""

    method: str
    level: float = Field(gt=0, lt=1)
    resamples: int = Field(ge=2)
    seed: int
    unit: str  # what was resampled: "queries" or "images"
    n_units: int = Field(ge=1)
    intervals: dict[str, tuple[float, float]]  # metric -> (low, high), in the metric's own unit
    seconds: float = 0.0


class ResultRecord(StrictModel):
    """One finished unit (method x backbone x task/dataset x protocol x seed); boards read only these."""

    schema_version: int = 1
    identity: RecordIdentity
    scores: dict[str, float]
    main_metric: str
    main_score: float
    direction: Direction
    provenance: dict[str, Any]
    cost: dict[str, float] = Field(default_factory=dict)
    n_samples: dict[str, dict[str, int]] = Field(default_factory=dict)
    limited: bool = False
    created_at: str = ""
    selection: SelectionPolicy | None = Field(
        default=None, description="checkpoint-selection policy of the scored weights; None = a record "
                                  "written before policies existed (those scored the final epoch)")
    uncertainty: Uncertainty | None = Field(
        default=None, description="bootstrap intervals over test samples; None = a record written before "
                                  "intervals existed, or a metric that offers none")

    @model_validator(mode="after")
    def _main_score_in_scores(self) -> ResultRecord:
        if self.main_metric not in self.scores:
            raise ValueError(f"main_metric {self.main_metric!r} missing from scores")
        return self

    @model_validator(mode="after")
    def _selection_from_task(self) -> ResultRecord:
        """Tasks report their policy in ``task_details`` (every task does, see ``Task.run``); lift it to the
        top level so boards can group by it without digging into provenance."""
        if self.selection is None:
            details = self.provenance.get("task_details")
            reported = details.get("selection") if isinstance(details, dict) else None
            if reported in SELECTION_POLICIES:
                self.selection = reported
        return self


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the basis of every hash we publish."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(data: Any, length: int = 16) -> str:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:length]


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        with path.open() as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from exc


def _validate(model: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{path}: invalid {model.__name__}: {problems}") from exc


def repo_root() -> Path:
    """The folder above the package: the checkout when saip_bench runs from one (plain or editable install).

    Only :func:`checkout_root` says whether it is one; specs, cards and paper numbers are found by
    :func:`resource_dir`, which also works from an installed wheel.
    """
    return Path(__file__).resolve().parents[1]


def checkout_root() -> Path | None:
    """The source checkout saip_bench runs from, or None when it runs from an installed copy (a wheel)."""
    root = repo_root()
    return root if (root / "pyproject.toml").is_file() and (root / "saip_bench").is_dir() else None


# Built-in data, by kind: the folder inside the installed package (pyproject maps the top-level folders
# there as saip_bench.resources.*) and the same folder in a checkout (where the editable install leaves it).
RESOURCE_FOLDERS = {
    "tasks": ("resources/tasks", "tasks"),
    "datasets": ("resources/datasets", "datasets"),
    "paper": ("resources/paper", "leaderboards/paper"),
}
SPECS_ENV = "SAIP_SPECS"


def _packaged_dir(kind: str) -> Path | None:
    """``saip_bench/resources/<kind>`` of an installed copy, read through importlib.resources."""
    inside, _ = RESOURCE_FOLDERS[kind]
    folder = importlib.resources.files("saip_bench").joinpath(inside)
    # A zip import would give a non-Path Traversable; saip_bench (torch, timm) never runs from a zip.
    return Path(str(folder)) if isinstance(folder, Path) and folder.is_dir() else None


def resource_dir(kind: str) -> Path:
    """The built-in folder of ``kind`` (``tasks``, ``datasets`` or ``paper``).

    The package's own copy first (a wheel install, read with importlib.resources), else the checkout's
    top-level folder (``tasks/``, ``datasets/``, ``leaderboards/paper/``): a plain checkout or an editable
    install, whose finder cannot import the mapped folders.
    """
    if kind not in RESOURCE_FOLDERS:
        raise ValueError(f"unknown resource kind {kind!r}; known: {', '.join(RESOURCE_FOLDERS)}")
    packaged = _packaged_dir(kind)
    if packaged is not None:
        return packaged
    folder = repo_root() / RESOURCE_FOLDERS[kind][1]
    if not folder.is_dir():
        raise SpecError(
            f"no built-in {kind} folder: neither saip_bench/{RESOURCE_FOLDERS[kind][0]} in the package nor "
            f"{folder}; reinstall saip-bench (pip install .)"
        )
    return folder


def user_specs_dir() -> Path | None:
    """The folder named by ``SAIP_SPECS`` (extra or overriding ``tasks/<task>/<dataset>.yaml`` and
    ``datasets/<name>.yaml``), or None when it is unset or empty. A named folder that does not exist is an
    error, not a silent fall-back to the built-in specs."""
    value = os.environ.get(SPECS_ENV, "").strip()
    if not value:
        return None
    folder = Path(value).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"{SPECS_ENV}={value}: not a folder (it should hold tasks/<task>/<dataset>.yaml "
                        "and/or datasets/<name>.yaml)")
    return folder


def spec_sources() -> dict[str, str | None]:
    """Where specs and cards are read from, for a record's provenance (JSON-ready).

    ``origin`` is ``package`` (an installed copy) or ``checkout``; ``tasks``/``datasets`` are the built-in
    folders; ``user`` is the ``SAIP_SPECS`` folder (its files win over built-in ones of the same name) or
    None.
    """
    tasks = resource_dir("tasks")
    user = user_specs_dir()
    return {
        "origin": "package" if _packaged_dir("tasks") == tasks else "checkout",
        "tasks": str(tasks),
        "datasets": str(resource_dir("datasets")),
        "user": str(user) if user else None,
    }


def _search_dirs(kind: str, root: Path | None) -> list[Path]:
    """Folders holding ``kind`` files, lowest precedence first: ``root``'s alone when given, else the
    built-in folder then the ``SAIP_SPECS`` one."""
    if root is not None:
        return [Path(root) / kind]
    folders = [resource_dir(kind)]
    user = user_specs_dir()
    if user is not None and (user / kind).is_dir():
        folders.append(user / kind)
    return folders


def load_task_spec(path: str | Path) -> TaskSpec:
    path = Path(path)
    spec: TaskSpec = _validate(TaskSpec, load_yaml(path), path)
    if path.parent.name != spec.task or path.stem != spec.dataset:
        raise SpecError(f"{path}: must live at tasks/{spec.task}/{spec.dataset}.yaml")
    return spec


def load_dataset_card(path: str | Path) -> DatasetCard:
    path = Path(path)
    card: DatasetCard = _validate(DatasetCard, load_yaml(path), path)
    if path.stem != card.name:
        raise SpecError(f"{path}: card for {card.name!r} must be named {card.name}.yaml")
    return card


def _collect(kind: str, pattern: str, root: Path | None) -> list[Path]:
    """Files matching ``pattern`` in every search folder; a later folder's file replaces an earlier one
    with the same relative path. Sorted by that relative path."""
    found: dict[str, Path] = {}
    for folder in _search_dirs(kind, root):
        for path in folder.glob(pattern):
            found[path.relative_to(folder).as_posix()] = path
    return [found[key] for key in sorted(found)]


def task_spec_paths(root: Path | None = None) -> list[Path]:
    """Every ``tasks/<task>/<dataset>.yaml``: of ``root`` when given, else built-in then ``SAIP_SPECS``."""
    return _collect("tasks", "*/*.yaml", root)


def dataset_card_paths(root: Path | None = None) -> list[Path]:
    """Every ``datasets/<name>.yaml``: of ``root`` when given, else built-in then ``SAIP_SPECS``."""
    return _collect("datasets", "*.yaml", root)


def _find(kind: str, relative: str, root: Path | None) -> tuple[Path | None, list[Path]]:
    folders = _search_dirs(kind, root)
    for folder in reversed(folders):
        if (folder / relative).is_file():
            return folder / relative, folders
    return None, folders


def all_task_specs(root: Path | None = None) -> dict[str, TaskSpec]:
    specs = [load_task_spec(p) for p in task_spec_paths(root)]
    return {spec.key: spec for spec in specs}


def task_spec_path(task: str, dataset: str, root: Path | None = None) -> Path:
    """The file ``get_task_spec`` reads (a ``SAIP_SPECS`` override wins over the built-in spec)."""
    path, folders = _find("tasks", f"{task}/{dataset}.yaml", root)
    if path is None:
        from saip_bench.registry import did_you_mean

        pairs = list(all_task_specs(root))
        known = ", ".join(pairs) or "(none)"
        where = " or ".join(str(f) for f in folders)
        hint = did_you_mean(f"{task}/{dataset}", pairs)
        raise SpecError(f"no spec {task}/{dataset}.yaml in {where}{hint}; known task/dataset pairs: {known}")
    return path


def get_task_spec(task: str, dataset: str, root: Path | None = None) -> TaskSpec:
    return load_task_spec(task_spec_path(task, dataset, root))


def dataset_card_path(name: str, root: Path | None = None) -> Path:
    """The file ``get_dataset_card`` reads (a ``SAIP_SPECS`` override wins over the built-in card)."""
    path, folders = _find("datasets", f"{name}.yaml", root)
    if path is None:
        where = " or ".join(str(f) for f in folders)
        raise SpecError(f"no dataset card {name}.yaml in {where}; known: {', '.join(DATASET_NAMES)}")
    return path


def get_dataset_card(name: str, root: Path | None = None) -> DatasetCard:
    return load_dataset_card(dataset_card_path(name, root))


def load_record(path: str | Path) -> ResultRecord:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable JSON record ({exc})") from exc
    return _validate(ResultRecord, data, path)
