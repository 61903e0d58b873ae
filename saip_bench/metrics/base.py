"""Registry of ``saip-bench metric <name>`` commands; each metric module registers its own."""

from __future__ import annotations

import argparse
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.errors import DataFormatError
from saip_bench.registry import Registry


@dataclass(frozen=True)
class MetricCommand:
    """``add_arguments`` fills the sub-parser; ``compute`` returns the metrics dict for the args."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    compute: Callable[[argparse.Namespace], dict[str, Any]]
    main_metric: str


METRIC_COMMANDS: Registry[MetricCommand] = Registry("metric")


def register_metric_command(command: MetricCommand) -> MetricCommand:
    METRIC_COMMANDS.register(command.name, command, help=command.help, main=command.main_metric)
    return command


def load_prediction_npz(
    path: str | Path, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Arrays of a prediction ``.npz``; a missing, empty, non-zip, truncated file, a missing key or an
    array that needs pickle names the file (and the key).

    Why: ``saip-bench metric`` must answer a bad input with one line naming the file, not a traceback
    (a 0-byte file raised EOFError, a text file a message about ``allow_pickle``).
    """
    path = Path(path)
    expected = f"an .npz archive with arrays {list(required)}"
    try:
        with path.open("rb") as handle:
            head = handle.read(6)
    except FileNotFoundError as exc:
        raise DataFormatError(path, "a prediction .npz file", "nothing at that path") from exc
    except IsADirectoryError as exc:
        raise DataFormatError(path, "a prediction .npz file", "a directory") from exc
    except OSError as exc:
        raise DataFormatError(path, "a readable .npz file", f"{type(exc).__name__}: {exc}") from exc
    if not head:
        raise DataFormatError(path, expected, "an empty file (0 bytes)")
    if head.startswith(b"\x93NUMPY"):
        raise DataFormatError(path, expected, "a single .npy array (save with numpy.savez)")
    if not head.startswith(b"PK"):
        raise DataFormatError(path, expected, f"not a zip archive (starts with {head[:4]!r})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [key for key in required if key not in keys]
            if missing:
                raise DataFormatError(
                    path, f"an .npz with arrays {list(required)}", f"keys {sorted(keys)} (missing {missing})"
                )
            arrays = {}
            for key in (*required, *optional):
                if key not in keys:
                    continue
                try:
                    arrays[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise DataFormatError(path, f"array '{key}' of numbers",
                                              "Python objects (a pickled object array)") from exc
                    raise
            return arrays
    except DataFormatError:
        raise
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise DataFormatError(path, "a readable .npz archive", f"{type(exc).__name__}: {exc}") from exc
