"""Planning: expand a bench preset into evaluation units, pick protocols, split units into shards.

Why: every unit (method x backbone x task/dataset x protocol x seed) has one stable id, so records,
resume, shards and boards all agree on what "the same unit" means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from saip_bench.bench.presets import BenchPreset
from saip_bench.errors import SpecError, UserError
from saip_bench.registry import did_you_mean
from saip_bench.specs import DATASET_NAMES, TaskSpec

FAST_KINDS = ("linear", "frozen")


@dataclass(frozen=True, order=True)
class Unit:
    """One evaluation: a pretrained backbone scored on one task/dataset under one protocol and seed."""

    method: str
    backbone: str
    task: str
    dataset: str
    protocol: str
    seed: int
    variant: str = ""  # hash of the --cfg-options applied to the unit's spec ("": the spec as is)

    @property
    def record_protocol(self) -> str:
        """The protocol as records name it: ``finetune+cfg-<hash>`` when overrides changed the spec, so
        an overridden result never shares a record file, a resume decision or a board cell with the
        spec's own (saip_bench/overrides.py)."""
        return f"{self.protocol}+cfg-{self.variant}" if self.variant else self.protocol

    @property
    def uid(self) -> str:
        """File-name-safe id; also the record's file stem."""
        protocol = self.record_protocol
        parts = (self.method, self.backbone, self.task, self.dataset, protocol, f"seed{self.seed}")
        return "__".join(parts)

    @property
    def spec_key(self) -> str:
        return f"{self.task}/{self.dataset}"

    def identity(self) -> dict[str, object]:
        identity = asdict(self)
        del identity["variant"]
        identity["protocol"] = self.record_protocol
        return identity


def select_protocol(spec: TaskSpec, choice: str) -> str:
    """Map a preset's protocol choice to the protocol name of one spec."""
    if choice == "default":
        return spec.default_protocol
    if choice == "fast":
        fast = [name for name, proto in spec.protocols.items() if proto.kind in FAST_KINDS]
        if not fast:
            raise SpecError(f"tasks/{spec.key}.yaml has no linear/frozen protocol for the fast track")
        return spec.default_protocol if spec.default_protocol in fast else sorted(fast)[0]
    if choice == "paper":
        finetune = [name for name, proto in spec.protocols.items() if proto.kind == "finetune"]
        if not finetune:
            raise SpecError(f"tasks/{spec.key}.yaml has no finetune (paper) protocol")
        return "finetune" if "finetune" in finetune else sorted(finetune)[0]
    if choice not in spec.protocols:
        raise SpecError(f"tasks/{spec.key}.yaml has no protocol {choice!r}; it has {sorted(spec.protocols)}")
    return choice


def _paper_order(spec: TaskSpec) -> tuple[int, str]:
    """The order of the paper's radar axes (``DATASET_NAMES``), then the task name."""
    names = list(DATASET_NAMES)
    return (names.index(spec.dataset) if spec.dataset in names else len(names), spec.task)


def select_specs(preset: BenchPreset, specs: Mapping[str, TaskSpec]) -> list[TaskSpec]:
    if preset.tasks == "all":
        if not specs:
            raise SpecError("no task specs found under tasks/")
        return sorted(specs.values(), key=_paper_order)
    missing = [key for key in preset.tasks if key not in specs]
    if missing:
        raise SpecError(
            f"preset {preset.name!r} names unknown task/dataset pairs {missing}; known: {sorted(specs)}"
        )
    return [specs[key] for key in preset.tasks]


def plan_units(preset: BenchPreset, specs: Mapping[str, TaskSpec]) -> list[Unit]:
    """All units of a preset, ordered so units sharing a pretrained checkpoint run back to back."""
    units = [
        Unit(method, backbone, spec.task, spec.dataset, select_protocol(spec, preset.protocol), seed)
        for method in preset.methods
        for backbone in preset.backbones
        for seed in preset.seeds
        for spec in select_specs(preset, specs)
    ]
    units += [  # published checkpoints listed as methods (issue 24): one backbone each
        Unit(entry.name, entry.backbone, spec.task, spec.dataset, select_protocol(spec, preset.protocol),
             seed)
        for entry in preset.external
        for seed in preset.seeds
        for spec in select_specs(preset, specs)
    ]
    return units


def filter_units(
    units: Iterable[Unit],
    methods: Sequence[str] | None = None,
    backbones: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Unit]:
    """Narrow a plan from the command line; ``tasks`` entries: task, dataset or ``task/dataset`` names."""
    selected = list(units)
    for label, wanted, attr in (("method", methods, "method"), ("backbone", backbones, "backbone"),
                                ("seed", seeds, "seed")):
        if wanted:
            known = {getattr(u, attr) for u in selected}
            unknown = [w for w in wanted if w not in known]
            if unknown:
                hints = "".join(did_you_mean(str(w), map(str, known)) for w in unknown)
                raise UserError(f"{label}(s) {unknown} are not in the plan{hints}; "
                                f"the plan has {sorted(known)}")
            selected = [u for u in selected if getattr(u, attr) in set(wanted)]
    if tasks:
        def keep(u: Unit) -> bool:
            return any(t in (u.task, u.dataset, u.spec_key) for t in tasks)

        unmatched = [t for t in tasks if not any(t in (u.task, u.dataset, u.spec_key) for u in selected)]
        if unmatched:
            names = {n for u in selected for n in (u.task, u.dataset, u.spec_key)}
            hints = "".join(did_you_mean(t, names) for t in unmatched)
            raise UserError(f"task filter(s) {unmatched} match no unit of the plan{hints}; the plan has "
                            f"{sorted({u.spec_key for u in selected})}")
        selected = [u for u in selected if keep(u)]
    return selected


_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 1 <= i <= n (shard 1 of 4 is ``1/4``)."""
    match = _SHARD.match(text)
    if not match:
        raise UserError(f"--shard must look like i/n (e.g. 1/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise UserError(f"--shard {text}: need 1 <= i <= n")
    return index, count


def shard_units(units: Sequence[Unit], index: int, count: int) -> list[Unit]:
    """Shard ``index`` (1-based) of ``count``: round-robin over the plan order.

    Round-robin keeps shards within one unit of each other in size; the same plan on every machine gives
    a partition (each unit in exactly one shard). Units keep their plan order inside a shard.
    """
    if count < 1 or not 1 <= index <= count:
        raise UserError(f"shard {index}/{count}: need 1 <= i <= n")
    return [unit for position, unit in enumerate(units) if position % count == index - 1]
