"""Validated spec models: task specs, dataset cards, result records; YAML io and stable hashing.

Why: specs are data (ARCHITECTURE.md §2). Closed vocabularies and ``extra="forbid"`` turn a typo in a
YAML file into an error that names the file and field, instead of a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from saip_bench.errors import SpecError

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
    """The checkout holding ``tasks/`` and ``datasets/`` (the package is installed editable)."""
    return Path(__file__).resolve().parents[1]


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


def task_spec_paths(root: Path | None = None) -> list[Path]:
    return sorted(((root or repo_root()) / "tasks").glob("*/*.yaml"))


def dataset_card_paths(root: Path | None = None) -> list[Path]:
    return sorted(((root or repo_root()) / "datasets").glob("*.yaml"))


def all_task_specs(root: Path | None = None) -> dict[str, TaskSpec]:
    specs = [load_task_spec(p) for p in task_spec_paths(root)]
    return {spec.key: spec for spec in specs}


def get_task_spec(task: str, dataset: str, root: Path | None = None) -> TaskSpec:
    path = (root or repo_root()) / "tasks" / task / f"{dataset}.yaml"
    if not path.exists():
        known = ", ".join(all_task_specs(root)) or "(none)"
        raise SpecError(f"no spec {path}; known task/dataset pairs: {known}")
    return load_task_spec(path)


def get_dataset_card(name: str, root: Path | None = None) -> DatasetCard:
    path = (root or repo_root()) / "datasets" / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"no dataset card {path}; known: {', '.join(DATASET_NAMES)}")
    return load_dataset_card(path)


def load_record(path: str | Path) -> ResultRecord:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable JSON record ({exc})") from exc
    return _validate(ResultRecord, data, path)
