"""``--cfg-options key.path=value``: change a validated spec or config from the command line (mmengine style).

Why: an lr, an epoch count or an input size should not need an edit of a YAML file in the repository, and
a changed setting must never pass unvalidated nor silently mix with the spec's own results. An override
is applied to the spec's dict form and the whole spec is validated again (an unknown key or a wrong type
is an error naming the key and the spec file, before any work starts); the applied overrides go into the
record's provenance and, as a short hash, into the unit's identity (``Unit.variant``).

Syntax: ``[SCOPE:]dotted.key=VALUE``. VALUE is a YAML scalar or flow list/mapping (``5``, ``1e-4``,
``true``, ``null``, ``[256,128]``, ``adam``). SCOPE (``task/dataset``, a task or a dataset name) limits
the override to matching specs; without it, it applies to every spec of the plan that has the key's
parent. ``protocols.fast|paper|default.…`` name the protocol that track picks for each spec, so
``protocols.fast.schedule.epochs=2`` changes every spec's fast-track protocol (``linear`` or ``frozen``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml
from pydantic import ValidationError

from saip_bench.errors import SpecError, UserError
from saip_bench.specs import TaskSpec, canonical_json, stable_hash

FLAG = "--cfg-options"
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_KEY = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


@dataclass(frozen=True)
class Override:
    """One ``[scope:]path=value`` item as parsed (``text`` is what the user typed, for messages)."""

    text: str
    scope: str | None
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def canonical(self) -> str:
        """``path=<JSON value>``: the same setting always reads the same (``1e-4`` and ``0.0001`` agree)."""
        return f"{self.key}={canonical_json(self.value)}"


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; every number-looking string becomes a float."""
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def parse_value(text: str) -> Any:
    """A command-line value: JSON first (what ``pretrain --set`` always took), else YAML (scalars,
    ``[a, b]``, ``{k: v}``, ``1e-4``); unparsable text stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    return _numbers(value)


def parse_override(item: str, flag: str = FLAG, scoped: bool = True) -> Override:
    """``"reid/market1501:protocols.finetune.schedule.lr=1e-4"`` -> :class:`Override`."""
    key, sep, text = item.partition("=")
    key = key.strip()
    scope: str | None = None
    if scoped and ":" in key:
        scope, _, key = key.partition(":")
        scope = scope.strip() or None
    if not sep or not _KEY.match(key):
        raise UserError(f"{flag} {item!r}: expected [task/dataset:]dotted.key=value, e.g. "
                        "protocols.finetune.schedule.lr=1e-4")
    return Override(item, scope, tuple(key.split(".")), parse_value(text))


def parse_overrides(items: Iterable[str] | None, flag: str = FLAG, scoped: bool = True) -> list[Override]:
    return [parse_override(item, flag, scoped) for item in items or ()]


def nested(overrides: Iterable[Override], flag: str = FLAG) -> dict[str, Any]:
    """``a.b=1 c=2`` -> ``{"a": {"b": 1}, "c": 2}`` (for configs merged as dicts, e.g. pretraining's)."""
    settings: dict[str, Any] = {}
    for item in overrides:
        *parents, leaf = item.path
        node = settings
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{flag} {item.text!r}: {part!r} is set both as a value and as a group")
        node[leaf] = item.value
    return settings


def spec_file(spec: TaskSpec) -> str:
    """The file a spec was read from (for messages), or its conventional relative path."""
    from saip_bench.specs import task_spec_path

    try:
        return str(task_spec_path(spec.task, spec.dataset))
    except (SpecError, UserError):
        return f"tasks/{spec.task}/{spec.dataset}.yaml"


TRACKS = ("fast", "paper", "default")


def resolve(item: Override, spec: TaskSpec) -> Override | None:
    """``protocols.fast|paper|default.…`` names the protocol that track picks for this spec (``linear``,
    ``frozen``, ``finetune``...), as presets do; None when the spec has no protocol for that track."""
    path = item.path
    if len(path) < 2 or path[0] != "protocols" or path[1] not in TRACKS or path[1] in spec.protocols:
        return item
    from saip_bench.bench.plan import select_protocol

    try:
        name = select_protocol(spec, path[1])
    except SpecError:
        return None
    return replace(item, path=("protocols", name, *path[2:]))


def _in_scope(scope: str, spec: TaskSpec) -> bool:
    return scope in (spec.key, spec.task, spec.dataset)


def _parent(data: Any, path: tuple[str, ...]) -> tuple[Any, str | None]:
    """The container holding ``path``'s leaf, or (None, first missing part)."""
    node = data
    for part in path[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None, part
    leaf = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node)):
        return node, None
    return None, path[-1]


def _set(data: dict[str, Any], override: Override) -> None:
    node, _ = _parent(data, override.path)
    leaf = override.path[-1]
    if isinstance(node, list):
        node[int(leaf)] = override.value
    else:
        node[leaf] = override.value


def describe_errors(exc: ValidationError, data: dict[str, Any] | None = None) -> str:
    """A pydantic error as one line per key (``a.b: unknown key (known here: ...)``; ``a.c: <why>``)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            node, _ = _parent(data or {}, tuple(str(p) for p in err["loc"]))
            siblings = node if isinstance(node, dict) else {}
            known = ", ".join(sorted(k for k in siblings if k != err["loc"][-1]))
            parts.append(f"{loc}: unknown key" + (f" (known here: {known})" if known else ""))
        else:
            parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def apply_to_spec(spec: TaskSpec, overrides: Iterable[Override], flag: str = FLAG) -> TaskSpec:
    """``spec`` with every override set on its dict form, validated after each one (so an error names the
    override that caused it). An unknown parent key is an error here; an unknown leaf key is caught by the
    schema (``extra="forbid"``); free mappings (``params``, ``lr_mult``) accept new keys."""
    data = spec.model_dump(mode="json")
    for given in overrides:
        item = resolve(given, spec) or given
        node, missing = _parent(data, item.path)
        if node is None:
            raise UserError(f"{flag} {item.text!r}: unknown key {item.key!r} in {spec_file(spec)} "
                            f"(no {missing!r} there)")
        _set(data, item)
        try:
            spec = TaskSpec.model_validate(data)
        except ValidationError as exc:
            problems = describe_errors(exc, data)
            raise UserError(f"{flag} {item.text!r}: {spec_file(spec)}: {problems}") from None
        data = spec.model_dump(mode="json")
    return spec


def apply_to_specs(
    specs: Mapping[str, TaskSpec], overrides: Iterable[Override], plan: Iterable[str] | None = None,
    flag: str = FLAG,
) -> tuple[dict[str, TaskSpec], dict[str, list[str]]]:
    """(specs with the overrides applied, spec key -> canonical overrides applied to it).

    Only the specs named in ``plan`` (default: all) are touched. A scoped override must match a planned
    spec and its key must exist there; an unscoped one goes to every planned spec holding the key's
    parent and must reach at least one.
    """
    overrides = list(overrides)
    planned = [key for key in (plan if plan is not None else specs) if key in specs]
    per_spec: dict[str, list[Override]] = {key: [] for key in planned}
    for item in overrides:
        if item.scope is not None:
            targets = [key for key in planned if _in_scope(item.scope, specs[key])]
            if not targets:
                raise UserError(f"{flag} {item.text!r}: scope {item.scope!r} matches no spec of the plan "
                                f"({', '.join(planned) or 'none'})")
        else:
            targets = [key for key in planned if (found := resolve(item, specs[key])) is not None
                       and _parent(specs[key].model_dump(mode="json"), found.path)[0] is not None]
            if not targets:
                files = ", ".join(spec_file(specs[key]) for key in planned) or "no spec"
                raise UserError(f"{flag} {item.text!r}: unknown key {item.key!r}: no spec of the plan has "
                                f"it ({files})")
        for key in targets:
            per_spec[key].append(item)
    result = dict(specs)
    applied: dict[str, list[str]] = {}
    for key, items in per_spec.items():
        if items:
            result[key] = apply_to_spec(specs[key], items, flag)
            applied[key] = [(resolve(item, specs[key]) or item).canonical() for item in items]
    return result, applied


def variant(applied: Iterable[str]) -> str:
    """Short hash of the overrides applied to one spec: the ``+cfg-<hash>`` suffix of a unit's protocol
    in its record identity and file name."""
    return stable_hash(sorted(applied), length=8)
