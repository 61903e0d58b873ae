"""Bench presets as data: which methods, backbones, task/dataset pairs, protocol, seeds and pretraining.

Why: a benchmark run is defined by one small validated YAML file (``saip_bench/bench/presets/<name>.yaml``
or any path), so the plan, the records' provenance and the boards all name the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from saip_bench.errors import SpecError
from saip_bench.registry import did_you_mean
from saip_bench.specs import StrictModel, _validate, load_yaml, stable_hash

PRESET_DIR = Path(__file__).resolve().parent / "presets"

# "fast": each spec's linear/frozen protocol (the CPU protocol); "paper": its finetune protocol;
# "default": the spec's default_protocol; anything else: a protocol name every selected spec must have.
ProtocolChoice = str


class PretrainSettings(StrictModel):
    preset: str = "quick"
    steps: int | None = Field(default=None, gt=0)
    seed: int | Literal["unit"] = 0  # "unit": pretrain once per evaluation seed


class EvalSettings(StrictModel):
    amp: bool = True
    num_workers: int = Field(default=0, ge=0)


class ExternalCheckpoint(StrictModel):
    """A published checkpoint run as a method (issue 24): ``name`` on the boards, its file, its backbone.

    ``checkpoint: null`` = named by the user at run time (``--checkpoint name/backbone=FILE``); until then
    the plan shows its units as waiting for it. Relative paths are read from the working directory.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    backbone: str
    checkpoint: str | None = None

    @field_validator("name")
    @classmethod
    def _no_double_underscore(cls, value: str) -> str:
        if "__" in value:  # "__" separates the parts of unit ids and record file names
            raise ValueError(f"{value!r}: '__' is reserved (it separates the parts of record names)")
        return value


class BenchPreset(StrictModel):
    """What to run. ``tasks``: ``all`` or ``task/dataset`` keys (``tasks/<task>/<dataset>.yaml``)."""

    name: str
    description: str = ""
    data: Literal["synthetic", "real"] = "synthetic"
    synth_preset: str = "default"
    synth_seed: int = 0
    methods: list[str] = Field(default_factory=list)
    # published checkpoints evaluated beside the methods (timm, MAE, HAP, PATH, plain PyTorch)
    external: list[ExternalCheckpoint] = Field(default_factory=list)
    backbones: list[str] = Field(min_length=1)
    tasks: Literal["all"] | list[str] = "all"
    protocol: ProtocolChoice = "fast"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    pretrain: PretrainSettings = Field(default_factory=PretrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_validator("methods", "backbones", "seeds")
    @classmethod
    def _no_duplicates(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate entries in {values}")
        return values

    @field_validator("tasks")
    @classmethod
    def _task_keys(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            bad = [key for key in value if key.count("/") != 1]
            if bad:
                raise ValueError(f"task entries must be 'task/dataset', got {bad}")
            if len(set(value)) != len(value):
                raise ValueError("duplicate task/dataset entries")
        return value

    @model_validator(mode="after")
    def _methods_or_external(self) -> BenchPreset:
        if not self.methods and not self.external:
            raise ValueError("give at least one of methods or external")
        pairs = [(e.name, e.backbone) for e in self.external]
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"duplicate external name/backbone entries in {pairs}")
        clash = sorted({e.name for e in self.external} & set(self.methods))
        if clash:
            raise ValueError(f"{clash} named both as a method and as an external checkpoint")
        return self

    def external_checkpoints(self) -> dict[tuple[str, str], Path | None]:
        """``(name, backbone) -> file`` (None: to be given with ``--checkpoint name/backbone=FILE``)."""
        return {(e.name, e.backbone): Path(e.checkpoint) if e.checkpoint else None for e in self.external}

    @property
    def hash(self) -> str:
        data = self.model_dump(mode="json")
        if not data["external"]:  # presets without external checkpoints keep their hash from before
            del data["external"]
        return stable_hash(data)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_bench_preset(name_or_path: str | Path) -> BenchPreset:
    """A packaged preset by name (``default``, ``paper``, ...) or a YAML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise SpecError(
                f"unknown bench preset {str(name_or_path)!r}"
                f"{did_you_mean(str(name_or_path), available_presets())}; "
                f"known: {', '.join(available_presets())} "
                "(or pass a path to a YAML file)"
            )
    preset: BenchPreset = _validate(BenchPreset, load_yaml(path), path)
    return preset
