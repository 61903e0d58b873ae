"""The record store: one validated JSON file per finished unit under ``<run>/records/``.

Why: records are the only input of the boards (ARCHITECTURE.md §4). Each is written atomically (temp
file, fsync, rename), so a unit killed mid-write leaves either the previous record or none, never half.

One owner per unit (issue 27): a process runs a unit only after ``claim`` took the unit's owner lock
(``<run>/.records.claims/<uid>.lock``, pid and host inside; beside ``records/``, which holds only
records) and saw its record unchanged since it planned. Two runs, shards or workers on one run folder
therefore never compute a unit twice: the later one skips what the other holds or has just written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

from saip_bench.bench.plan import Unit
from saip_bench.errors import SpecError, UserError
from saip_bench.locks import Claim, LockBusy
from saip_bench.specs import ResultRecord, load_record
from saip_bench.utils import atomic_write_json


class UnitStatus(StrEnum):
    MISSING = "missing"
    DONE = "done"  # a record exists and its provenance key matches the plan
    STALE = "stale"  # a record exists but was made from other inputs (spec, data, pretraining, limit)
    INVALID = "invalid"  # a file exists but does not validate as a record


class OverwritePolicy(StrEnum):
    NEVER = "never"  # keep every existing record, even a stale one
    MISSING = "missing"  # run units without a matching record (missing, stale or invalid)
    ALWAYS = "always"  # run every unit


class RecordStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._seen: dict[str, int | None] = {}  # uid -> record mtime (None: absent) when last planned
        self._claim: Claim | None = None

    @property
    def claims(self) -> Path:
        """Where the unit claims live: a hidden folder beside the records folder."""
        return self.directory.with_name(f".{self.directory.name}.claims")

    def path(self, unit: Unit) -> Path:
        return self.directory / f"{unit.uid}.json"

    def _mtime(self, unit: Unit) -> int | None:
        try:
            return self.path(unit).stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def claim(self, unit: Unit) -> str | None:
        """Take ``unit`` for this process (releasing the unit it held before); None when it is ours, else
        why not: another live process runs it, or wrote its record after this process planned it."""
        self.release()
        try:
            claim = Claim(self.claims / f"{unit.uid}.lock", f"unit {unit.uid}", f"running unit {unit.uid}")
        except LockBusy as exc:
            return str(exc)
        if unit.uid in self._seen and self._mtime(unit) != self._seen[unit.uid]:
            claim.release()
            return f"its record {self.path(unit)} was written by another process after this run planned it"
        self._claim = claim
        return None

    def release(self) -> None:
        """Let go of the claimed unit (done, failed or skipped); also done by ``write`` and ``claim``."""
        if self._claim is not None:
            claim, self._claim = self._claim, None
            claim.release()

    def write(self, record: ResultRecord | dict[str, Any]) -> Path:
        """Validate, then write atomically; the file name comes from the record's identity."""
        if not isinstance(record, ResultRecord):
            record = ResultRecord.model_validate(record)
        identity = record.identity
        unit = Unit(identity.method, identity.backbone, identity.task, identity.dataset, identity.protocol,
                    identity.seed)
        path = self.path(unit)
        atomic_write_json(path, record.model_dump(mode="json"))
        self._seen[unit.uid] = self._mtime(unit)
        self.release()
        return path

    def read(self, unit: Unit) -> ResultRecord | None:
        path = self.path(unit)
        if not path.exists():
            return None
        return load_record(path)

    def status(self, unit: Unit, unit_key: str) -> UnitStatus:
        self._seen[unit.uid] = self._mtime(unit)  # what this process planned from (see ``claim``)
        try:
            record = self.read(unit)
        except SpecError:
            return UnitStatus.INVALID
        if record is None:
            return UnitStatus.MISSING
        return UnitStatus.DONE if record.provenance.get("unit_key") == unit_key else UnitStatus.STALE

    def __iter__(self) -> Iterator[Path]:
        return iter(sorted(self.directory.glob("*.json")))


def needs_run(status: UnitStatus, policy: OverwritePolicy) -> bool:
    if policy is OverwritePolicy.ALWAYS:
        return True
    if policy is OverwritePolicy.NEVER:
        return status in (UnitStatus.MISSING, UnitStatus.INVALID)
    return status is not UnitStatus.DONE


def record_files(paths: Iterable[str | Path]) -> list[Path]:
    """Record files under run folders, ``records/`` folders or single files (sorted, no duplicates)."""
    found: set[Path] = set()
    for item in paths:
        path = Path(item)
        if path.is_file():
            found.add(path.resolve())
        elif path.is_dir():
            base = path / "records" if (path / "records").is_dir() else path
            found.update(p.resolve() for p in base.rglob("*.json") if not p.name.startswith("."))
        else:
            raise UserError(f"{path}: no such records file or folder")
    return sorted(found)


class StoredRecord(ResultRecord):
    """A record and the file it was read from (not part of the record: boards link each cell to it)."""

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    @classmethod
    def read(cls, path: Path) -> StoredRecord:
        record = load_record(path)  # validated once, with its errors naming the file
        stored = cls.model_construct(_fields_set=record.model_fields_set, **dict(record))
        stored._source = path
        return stored


def load_records(paths: Iterable[str | Path], skip_invalid: bool = False) -> list[ResultRecord]:
    """All records under ``paths``, each knowing its file (``StoredRecord.source``); an invalid file is an
    error naming it (or skipped: ``skip_invalid``)."""
    records: list[ResultRecord] = []
    for path in record_files(paths):
        try:
            records.append(StoredRecord.read(path))
        except SpecError:
            if not skip_invalid:
                raise
    return records
