"""What every reader shares: the reader interface, version detection against the dataset card, and
file helpers that turn every way a native file can be broken into one ``DataFormatError`` naming it.

Why: readers are the one door through which real and synthetic data enter saip-bench, so a truncated
image, a malformed JSON line or a wrong ``.mat`` variable must say *which file* and *what was expected*
instead of surfacing as a KeyError deep in a task.
"""

from __future__ import annotations

import json
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from saip_bench.data.records import DatasetSplits
from saip_bench.errors import DataFormatError, UserError
from saip_bench.specs import DatasetCard, get_dataset_card

IGNORE_INDEX = 255


# --------------------------------------------------------------------------------------------- files


def load_json(path: Path) -> Any:
    """Parse a whole JSON file; a missing or malformed file names itself and the position of the error."""
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except FileNotFoundError as exc:
        raise DataFormatError(path, "a JSON file", "nothing at that path") from exc
    except IsADirectoryError as exc:
        raise DataFormatError(path, "a JSON file", "a directory") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "UTF-8 JSON", f"undecodable bytes ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            path, "valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise DataFormatError(path, "a readable JSON file", f"{type(exc).__name__}: {exc}") from exc


def read_text_lines(path: Path, what: str) -> list[str]:
    """Non-empty, stripped lines of a list file (the official lists have no trailing newline)."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise DataFormatError(path, what, "nothing at that path (missing split file)") from exc
    except IsADirectoryError as exc:
        raise DataFormatError(path, what, "a directory") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"{what} (UTF-8 text)", "binary content") from exc
    except OSError as exc:
        raise DataFormatError(path, what, f"{type(exc).__name__}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataFormatError(path, what, "nothing at that path" if not path.exists() else "a file")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataFormatError(path, what, "nothing at that path" if not path.exists() else "a directory")
    return path


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the image header only (cheap); DataFormatError if it is not an image."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError as exc:
        raise DataFormatError(path, "an image file", "nothing at that path") from exc
    except DataFormatError:
        raise
    except Exception as exc:  # PIL raises many types on corrupt files
        raise DataFormatError(path, "a readable image", f"{type(exc).__name__}: {exc}") from exc


def open_image(path: str | Path) -> Image.Image:
    """Decode an image fully (catches truncated files) and return it as RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image.convert("RGB")
    except FileNotFoundError as exc:
        raise DataFormatError(path, "an image file", "nothing at that path") from exc
    except Exception as exc:  # PIL raises many types on corrupt files (and the bomb warning, made an error)
        raise DataFormatError(path, "a complete, readable image", f"{type(exc).__name__}: {exc}") from exc


def load_label(path: str | Path, size: tuple[int, int] | None = None, num_classes: int = 20) -> np.ndarray:
    """A parsing label PNG as an (H, W) uint8 array of raw class ids (255 = ignore).

    Checks the traps in docs/formats.md#label-pngs-lip-and-cihp: single channel (mode L, or P whose indices
    are the ids; an RGB
    colour visualisation is refused), ids in ``0..num_classes-1`` or 255, and, when ``size`` = (width,
    height) of the image is given, the same size as the image.
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode not in ("L", "P"):
                raise DataFormatError(
                    path,
                    "a single-channel label PNG of raw class ids (mode L or P)",
                    f"mode {mode} (a colour visualisation?)",
                )
            found_size = image.size
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DataFormatError(path, "a label PNG", "nothing at that path") from exc
    except DataFormatError:
        raise
    except Exception as exc:  # PIL raises many types on corrupt files
        raise DataFormatError(path, "a complete, readable label PNG", f"{type(exc).__name__}: {exc}") from exc
    if size is not None and tuple(found_size) != tuple(size):
        raise DataFormatError(
            path,
            f"a label of the image's size {size[0]}x{size[1]} (width x height)",
            f"{found_size[0]}x{found_size[1]}",
        )
    values = np.unique(array)
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise DataFormatError(
            path, f"class ids 0..{num_classes - 1} or {IGNORE_INDEX} (ignore)", f"values {bad[:10]}"
        )
    return array


def load_id_map(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An instance-id PNG (CIHP Human_ids / Instance_ids): single channel, image-sized; any ids allowed."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "P", "I", "I;16"):
                raise DataFormatError(path, "a single-channel id PNG", f"mode {image.mode}")
            found_size = image.size
            array = np.asarray(image)
    except FileNotFoundError as exc:
        raise DataFormatError(path, "an id PNG", "nothing at that path") from exc
    except DataFormatError:
        raise
    except Exception as exc:  # PIL raises many types on corrupt files
        raise DataFormatError(path, "a complete, readable id PNG", f"{type(exc).__name__}: {exc}") from exc
    if size is not None and tuple(found_size) != tuple(size):
        raise DataFormatError(
            path, f"an id map of the image's size {size[0]}x{size[1]}", f"{found_size[0]}x{found_size[1]}"
        )
    return array


def expect(condition: bool, path: Path | str, expected: str, found: Any = None) -> None:
    """Raise DataFormatError unless ``condition``; ``found`` is shortened for the message."""
    if not condition:
        text = None if found is None else _short(found)
        raise DataFormatError(path, expected, text)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_int(value: Any, path: Path | str, what: str) -> int:
    """An integer field (bools and floats with a fraction refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataFormatError(path, f"{what} as an integer", _short(value))
    if isinstance(value, (float, np.floating)) and (not np.isfinite(value) or float(value) != int(value)):
        raise DataFormatError(path, f"{what} as an integer", _short(value))
    return int(value)


def as_float_list(value: Any, path: Path | str, what: str, length: int | None = None) -> list[float]:
    """A list of finite numbers (optionally of a fixed length), as plain floats."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        want = f"a list of {length} numbers" if length is not None else "a list of numbers"
        raise DataFormatError(path, f"{what} as {want}", _short(value))
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise DataFormatError(path, f"{what} as numbers", _short(value))
        out.append(float(item))
    if not all(np.isfinite(out)):
        raise DataFormatError(path, f"{what} as finite numbers", _short(value))
    return out


def as_dict(value: Any, path: Path | str, what: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataFormatError(path, f"{what} as a JSON object", _short(value))
    missing = [key for key in keys if key not in value]
    if missing:
        raise DataFormatError(path, f"{what} with keys {list(keys)}", f"missing {missing} in {_short(value)}")
    return value


def as_list(value: Any, path: Path | str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DataFormatError(path, f"{what} as a JSON list", _short(value))
    return value


# ------------------------------------------------------------------------------------------ readers


@dataclass
class FileCheck:
    """One file that ``verify`` may open: an image, a parsing label or an id map (with the image it
    must match in size)."""

    path: str
    kind: str  # "image" | "label" | "id_map"
    image: str | None = None  # the image a label / id map must match in size
    num_classes: int = 20


@dataclass
class ReadContext:
    """Notes a reader leaves for ``verify``: things that are not errors but a user should see."""

    warnings: list[str] = field(default_factory=list)


class DatasetReader(ABC):
    """One dataset: turns a root in its native layout into ``DatasetSplits``.

    Subclasses set ``name`` and implement ``read``. ``layout_alternatives`` lists other places where a
    card layout path is found in real releases (e.g. LIP id lists inside ``TrainVal_images/``);
    ``wrapper_dirs`` are folders a root may contain instead of being the dataset itself (the top folder
    of the official archive), which ``locate`` steps into.
    """

    name: str = ""
    layout_alternatives: ClassVar[dict[str, tuple[str, ...]]] = {}
    wrapper_dirs: tuple[str, ...] = ()

    @property
    def card(self) -> DatasetCard:
        return get_dataset_card(self.name)

    # -- versions -------------------------------------------------------------------------------

    def layout_paths_missing(self, root: Path, version: str) -> list[str]:
        """Card layout paths (or their known alternatives) that are absent under ``root``."""
        missing = []
        for rel in self.card.versions[version].layout:
            candidates = (rel, *self.layout_alternatives.get(rel, ()))
            if not any((root / cand).exists() for cand in candidates):
                missing.append(rel)
        return missing

    def satisfied_versions(self, root: Path) -> list[str]:
        return [v for v in self.card.versions if not self.layout_paths_missing(root, v)]

    def locate(self, root: Path) -> Path:
        """The folder that holds the dataset: ``root`` or one of its known wrapper folders."""
        if self.satisfied_versions(root):
            return root
        for wrapper in self.wrapper_dirs:
            candidate = root / wrapper
            if candidate.is_dir() and self.satisfied_versions(candidate):
                return candidate
        return root

    def detect_version(self, root: Path, requested: str | None = None) -> str:
        """The requested version (validated), else the card default if its layout is present, else the
        first version whose layout is complete, else the one with the fewest missing paths."""
        card = self.card
        if requested is not None:
            if requested not in card.versions:
                known = ", ".join(card.versions)
                raise UserError(f"dataset {self.name!r} has no version {requested!r}; versions: {known}")
            return requested
        satisfied = self.satisfied_versions(root)
        if card.default_version in satisfied:
            return card.default_version
        if satisfied:
            return satisfied[0]
        return min(card.versions, key=lambda v: len(self.layout_paths_missing(root, v)))

    # -- reading --------------------------------------------------------------------------------

    @abstractmethod
    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        """Parse the native files under ``root`` (already located) for ``version``."""

    def file_checks(self, data: DatasetSplits) -> Iterator[FileCheck]:
        """Every file a record points at, for ``verify`` to open (a sample, or all with ``--full``)."""
        for records in data.splits.values():
            for record in records:
                yield FileCheck(record["path"], "image")

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        """Protocol-level problems visible from the records alone (overlaps, empty splits, ...)."""
        return []

    def dataset_counts(self, data: DatasetSplits) -> dict[str, int]:
        """Dataset-level counts compared with the card's ``counts`` (attributes, categories, ...)."""
        return {}


def make_splits(
    name: str, version: str, root: Path, splits: dict[str, list[dict[str, Any]]], meta: dict[str, Any]
) -> DatasetSplits:
    return DatasetSplits(name=name, version=version, root=root.resolve(), splits=splits, meta=meta)


def join_path(folder: Path, name: str) -> str:
    """``folder/name`` as a string: plain string joining, as pathlib's per-call parsing adds up over the
    10^5 records of MSMT17 or PA-100K."""
    return f"{folder}{os.sep}{name}"
