"""``<pool>/keypoints.json``: the one reader and the one writer of the keypoints HAP's masking reads.

Why one pair: the pretraining loader (``data.PretrainFolder``) and ``saip-bench data keypoints`` (which
pseudo-labels a real pool) must agree on every detail of the file, so both go through this module.

Format: a JSON object mapping an image's path (relative to the pool root, e.g. ``images/0001/a.jpg``;
paths relative to ``images/`` or bare file names are also looked up by the loader) to 17 COCO keypoints
``[[x, y, v] * 17]`` in that image's pixels, ``v > 0`` meaning usable. A file made by ``data keypoints``
starts with one more entry, ``"_provenance"`` (the pose checkpoint's hashes, the pose settings, the pool's
image listing hash, the date): written first so that ``read_provenance`` reads only the head of a file
that holds a million images. Files without it (the synthetic world's ground truth, hand-made files) are
read the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from saip_bench.errors import DataFormatError
from saip_bench.utils import atomic_open

KEYPOINTS_FILE = "keypoints.json"
PROVENANCE_KEY = "_provenance"
NUM_KEYPOINTS = 17  # COCO-17: HAP's body parts (methods/hap.py BODY_PARTS) index these
FORMAT = "saip-bench-keypoints/1"
EXPECTED = "JSON {relative path: [[x, y, v] * 17]}"
_HEAD_BYTES = 1 << 16  # the provenance entry is far smaller than this


def keypoints_path(root: str | Path) -> Path:
    """Where HAP looks for a pool's keypoints."""
    return Path(root) / KEYPOINTS_FILE


def check_entry(path: str | Path, key: str, value: Any) -> None:
    """One image's keypoints must be 17 triples of finite numbers; the error names the file and the image."""
    ok = isinstance(value, list) and len(value) == NUM_KEYPOINTS and all(
        isinstance(p, list) and len(p) == 3
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in p)
        for p in value
    )
    if not ok:
        shape = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise DataFormatError(path, f"{NUM_KEYPOINTS} [x, y, v] triples of finite numbers per image "
                                    f"(COCO-17, what HAP reads)", f"{shape} for {key!r}")


def read_keypoints(path: str | Path) -> tuple[dict[str, list[list[float]]], dict[str, Any] | None]:
    """(table, provenance or None) of a keypoints file, every entry checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataFormatError(path, EXPECTED, "missing file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(path, EXPECTED, str(exc)) from exc
    if not isinstance(data, dict):
        raise DataFormatError(path, "a JSON object", type(data).__name__)
    provenance = data.pop(PROVENANCE_KEY, None)
    if provenance is not None and not isinstance(provenance, dict):
        raise DataFormatError(path, f"{PROVENANCE_KEY!r}: a JSON object", type(provenance).__name__)
    for key, value in data.items():
        check_entry(path, key, value)
    return data, provenance


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The ``_provenance`` entry of a keypoints file, reading only its head; None when it has none."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    prefix = "{" + json.dumps(PROVENANCE_KEY) + ":"
    if not head.startswith(prefix):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(head, len(prefix))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"a readable {PROVENANCE_KEY!r} entry first", str(exc)) from exc
    return value if isinstance(value, dict) else None


def write_keypoints(
    path: str | Path,
    entries: Mapping[str, Sequence[Sequence[float]]] | Iterable[tuple[str, Sequence[Sequence[float]]]],
    provenance: Mapping[str, Any],
) -> None:
    """Write the file atomically (a temp file beside it, fsync, rename): provenance first, then the images
    in the order given, compact. ``entries`` may be a generator: a million images are streamed to disk,
    never held as one string. Same inputs, same bytes; on any error nothing replaces an existing file."""
    path = Path(path)
    items = entries.items() if isinstance(entries, Mapping) else entries
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("{" + json.dumps(PROVENANCE_KEY) + ":"
                     + json.dumps(dict(provenance), sort_keys=True, separators=(",", ":")))
        for key, value in items:
            if key == PROVENANCE_KEY:
                raise DataFormatError(path, "image paths as keys", f"the reserved key {key!r}")
            value = [list(p) for p in value]
            check_entry(path, key, value)
            handle.write("," + json.dumps(key) + ":" + json.dumps(value, separators=(",", ":")))
        handle.write("}\n")
