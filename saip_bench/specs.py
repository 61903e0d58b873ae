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


class Schedule(StrictModel):
    """Optimisation schedule of one protocol; numbers as in the paper's downstream configs."""

    epochs: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0, default=0.0)
    warmup_epochs: float = Field(ge=0, default=0.0)
    scheduler: Literal["cosine", "step", "plateau", "constant"] = "cosine"
    milestones: list[float] = Field(default_factory=list)
    layer_decay: float | None = None
    grad_clip: float | None = None
    max_steps: int | None = Field(default=None, gt=0)


class Protocol(StrictModel):
    kind: ProtocolKind
    schedule: Schedule
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)


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

    @model_validator(mode="after")
    def _main_score_in_scores(self) -> ResultRecord:
        if self.main_metric not in self.scores:
            raise ValueError(f"main_metric {self.main_metric!r} missing from scores")
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
        known = ", ".join(all_task_specs(root)) or "(none)"
        where = " or ".join(str(f) for f in folders)
        raise SpecError(f"no spec {task}/{dataset}.yaml in {where}; known task/dataset pairs: {known}")
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
