"""``verify_dataset``: is a root usable, which version is it, do its counts match the card, and which
files are broken -- every problem listed with the file and what was expected.

Count policy: for real data the counts of the detected version are compared with the card (a
half-extracted or mixed-version copy is *not* usable: silent count mismatches are the bug this guards
against). A synthetic world declares itself with ``<world>/.world.json``; its counts are compared with
what that file declares for the dataset (when it declares them), never with the official ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saip_bench.data.readers.base import (
    DatasetReader,
    FileCheck,
    ReadContext,
    image_size,
    load_id_map,
    load_label,
)
from saip_bench.data.readers.base import open_image as _open_image
from saip_bench.errors import DataFormatError

SAMPLE_PER_KIND = 24  # files of each kind opened without --full
MAX_PER_KIND = 50  # console only: messages of one kind shown before summarising (--json lists all)
WORLD_MARKER = ".world.json"


@dataclass
class VerifyReport:
    dataset: str
    version: str | None
    root: str
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    synthetic: bool = False
    available_versions: list[str] = field(default_factory=list)
    files_checked: int = 0
    full: bool = False
    problem_kinds: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "root": self.root,
            "usable": self.usable,
            "synthetic": self.synthetic,
            "available_versions": self.available_versions,
            "splits": self.splits,
            "problems": self.problems,
            "warnings": self.warnings,
            "files_checked": self.files_checked,
            "full": self.full,
        }

    def print(self) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console()
        status = "[green]usable[/green]" if self.usable else "[red]NOT usable[/red]"
        kind = "synthetic world" if self.synthetic else "real data"
        title = f"[bold]{self.dataset}[/bold] version [bold]{self.version}[/bold]"
        console.print(f"{title} ({kind}) at {self.root}: {status}")
        if self.splits:
            units = sorted({u for c in self.splits.values() for u in c}, key=lambda u: (u != "images", u))
            table = Table("split", *units)
            for split, counts in self.splits.items():
                table.add_row(split, *(str(counts.get(u, "")) for u in units))
            console.print(table)
        scope = "every file" if self.full else f"a sample of up to {SAMPLE_PER_KIND} files per kind"
        console.print(f"opened {self.files_checked} files ({scope})")
        for message in self.warnings:
            console.print(Text.assemble(("warning", "yellow"), " ", message), highlight=False)
        shown: dict[str, int] = {}
        kinds = self.problem_kinds or ["problem"] * len(self.problems)
        for kind, message in zip(kinds, self.problems, strict=True):
            shown[kind] = shown.get(kind, 0) + 1
            if shown[kind] <= MAX_PER_KIND:
                console.print(Text.assemble(("problem", "red"), " ", message), highlight=False)
        for kind, count in shown.items():
            if count > MAX_PER_KIND:
                hidden = count - MAX_PER_KIND
                console.print(f"... and {hidden} more problems of kind '{kind}' (--json lists every one)")


class _Problems:
    """Collects every message with its kind (the console view shortens long runs of one kind)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.kinds: list[str] = []

    def add(self, kind: str, message: str) -> None:
        self.messages.append(message)
        self.kinds.append(kind)

    def finish(self, report: VerifyReport) -> None:
        report.problems = list(self.messages)
        report.problem_kinds = list(self.kinds)


def world_manifest(root: Path) -> dict[str, Any] | None:
    """The synthetic world's declaration (``<world>/.world.json``), if ``root`` is inside one."""
    for folder in (root, root.parent):
        marker = folder / WORLD_MARKER
        if marker.is_file():
            try:
                data = json.loads(marker.read_text())
            except (OSError, ValueError):
                return {}
            return data if isinstance(data, dict) else {}
    return None


def _declared_world_counts(manifest: dict[str, Any], name: str) -> dict[str, dict[str, int]]:
    """Per-split counts a world declares for one dataset, if it does (several spellings accepted)."""
    datasets = manifest.get("datasets")
    entry = datasets.get(name) if isinstance(datasets, dict) else None
    if not isinstance(entry, dict):
        return {}
    counts = entry.get("counts", entry.get("splits", {}))
    if not isinstance(counts, dict):
        return {}
    return {s: c for s, c in counts.items() if isinstance(c, dict)}


def _compare_counts(
    found: dict[str, dict[str, int]], expected: dict[str, dict[str, int]], source: str, problems: _Problems
) -> None:
    """Card split keys may join splits with ``+`` (e.g. ``train+val`` when only the sum is verified)."""
    for key, units in expected.items():
        parts = key.split("+")
        if any(p not in found for p in parts):
            problems.add("counts", f"split {key!r}: expected by {source} but not read")
            continue
        for unit, want in units.items():
            values = [found[p].get(unit) for p in parts]
            if any(v is None for v in values):
                continue
            if unit == "identities" and len(parts) > 1:
                continue  # identities of a union are not the sum; compare single splits only
            have = sum(values)  # type: ignore[arg-type]
            if have != want:
                problems.add("counts", f"split {key!r}: {have} {unit}, expected {want} ({source})")


def _check_file(check: FileCheck, sizes: dict[str, tuple[int, int]]) -> None:
    if check.kind == "image":
        image = _open_image(check.path)
        sizes[check.path] = image.size
        return
    image_dims = None
    if check.image:
        image_dims = sizes.get(check.image)
        if image_dims is None and os.path.exists(check.image):
            try:
                image_dims = image_size(check.image)
            except DataFormatError:
                image_dims = None
    if check.kind == "label":
        load_label(check.path, image_dims, check.num_classes)
    else:
        load_id_map(check.path, image_dims)


def _open_files(reader: DatasetReader, data: Any, full: bool, problems: _Problems, seed: int = 0) -> int:
    """Stat every referenced file (an empty one is a problem even when not sampled: a copy interrupted
    mid-way leaves 0-byte files); decode all (``full``) or a seeded sample per kind."""
    by_kind: dict[str, list[FileCheck]] = {}
    missing_dirs: dict[str, int] = {}
    for check in reader.file_checks(data):
        try:
            size = os.stat(check.path).st_size if os.path.isfile(check.path) else None
        except OSError:
            size = None
        if size == 0:
            expected = _describe_kind(check.kind)
            problems.add(f"empty {check.kind}", f"{check.path}: expected {expected}, found an empty file "
                                                "(0 bytes)")
            continue
        if size is None:
            folder = os.path.dirname(check.path)
            if not os.path.isdir(folder):  # one message per missing folder, not one per file
                missing_dirs[folder] = missing_dirs.get(folder, 0) + 1
                continue
            problems.add(
                f"missing {check.kind}",
                f"{check.path}: expected {_describe_kind(check.kind)}, found nothing at that path",
            )
            continue
        by_kind.setdefault(check.kind, []).append(check)
    for folder, count in missing_dirs.items():
        problems.add(
            "missing folder",
            f"{folder}: expected a folder holding {count} files named by the "
            "annotations, found nothing at that path",
        )
    rng = random.Random(seed)
    opened = 0
    sizes: dict[str, tuple[int, int]] = {}
    for kind, checks in by_kind.items():
        chosen = checks if full else rng.sample(checks, min(SAMPLE_PER_KIND, len(checks)))
        # images first so labels compare against sizes already read
        for check in chosen:
            if kind != "image" and check.image and check.image not in sizes and os.path.isfile(check.image):
                try:
                    sizes[check.image] = image_size(check.image)
                except DataFormatError as exc:
                    problems.add("broken image", str(exc))
            try:
                _check_file(check, sizes)
            except DataFormatError as exc:
                problems.add(f"broken {kind}", str(exc))
            opened += 1
    return opened


def _describe_kind(kind: str) -> str:
    return {"image": "an image file", "label": "a label PNG", "id_map": "an id PNG"}.get(kind, "a file")


def verify(reader: DatasetReader, root: Path, version: str | None = None, full: bool = False) -> VerifyReport:
    card = reader.card
    root = reader.locate(root).resolve()
    report = VerifyReport(dataset=reader.name, version=None, root=str(root), full=full)
    problems = _Problems()
    manifest = world_manifest(root)
    report.synthetic = manifest is not None
    report.available_versions = reader.satisfied_versions(root)
    chosen = reader.detect_version(root, version)
    report.version = chosen
    for rel in reader.layout_paths_missing(root, chosen):
        problems.add(
            "layout",
            f"{root / rel}: expected by the {chosen!r} layout of {reader.name} (datasets/"
            f"{reader.name}.yaml), found nothing at that path",
        )
    context = ReadContext()
    try:
        from saip_bench.data.readers import _read_located

        data = _read_located(reader, root, chosen, context)
    except DataFormatError as exc:
        problems.add("read", str(exc))
        problems.finish(report)
        report.warnings = context.warnings
        return report
    report.warnings = list(context.warnings)
    report.splits = data.counts()
    for split, records in data.splits.items():
        if not records:
            problems.add("empty", f"split {split!r} is empty")
    if report.synthetic:
        declared = _declared_world_counts(manifest or {}, reader.name)
        _compare_counts(report.splits, declared, f"{WORLD_MARKER} of this synthetic world", problems)
    else:
        expected = card.versions[chosen]
        _compare_counts(
            report.splits, expected.splits, f"card {reader.name}.yaml, version {chosen}", problems
        )
        dataset_counts = reader.dataset_counts(data)
        for unit, want in expected.counts.items():
            have = dataset_counts.get(unit)
            if have is not None and have != want:
                problems.add(
                    "counts", f"{have} {unit}, expected {want} (card {reader.name}.yaml, version {chosen})"
                )
    for message in reader.consistency_problems(data):
        problems.add("consistency", message)
    report.files_checked = _open_files(reader, data, full, problems)
    problems.finish(report)
    return report


def check_label_sizes(reader: DatasetReader, data: Any, splits: list[str] | None = None) -> int:
    """Every label / id map of ``splits`` (default: all) has its image's size, from file headers only.

    Why: ``eval`` used to find a wrong-size GT label only when scoring, after training the whole unit, and
    then blamed its own prediction PNG. Raises ``DataFormatError`` naming the first wrong GT file (and how
    many others are wrong); returns the number of files compared.
    """
    if splits is not None:
        data = dataclasses.replace(data, splits={s: r for s, r in data.splits.items() if s in splits})
    sizes: dict[str, tuple[int, int]] = {}
    wrong: list[tuple[FileCheck, tuple[int, int], tuple[int, int]]] = []
    compared = 0
    for check in reader.file_checks(data):
        if check.kind == "image" or not check.image:
            continue
        if check.image not in sizes:
            sizes[check.image] = image_size(check.image)
        found = image_size(check.path)
        compared += 1
        if tuple(found) != tuple(sizes[check.image]):
            wrong.append((check, sizes[check.image], found))
    if wrong:
        check, want, found = wrong[0]
        others = ""
        if len(wrong) > 1:
            others = f" ({len(wrong) - 1} more {check.kind} files differ from their images)"
        raise DataFormatError(
            check.path,
            f"{_describe_kind(check.kind)} of its image's size {want[0]}x{want[1]} (width x height, "
            f"{check.image})",
            f"{found[0]}x{found[1]}{others}",
        )
    return compared
