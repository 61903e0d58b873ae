"""Registry of ``saip-bench metric <name>`` commands; each metric module registers its own."""

from __future__ import annotations

import argparse
import zipfile
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
    """Arrays of a prediction ``.npz``; a missing/unreadable file or a missing key names the file.

    Why: ``saip-bench metric`` must answer a bad input with one line naming the file, not a traceback.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [key for key in required if key not in keys]
            if missing:
                raise DataFormatError(
                    path, f"an .npz with arrays {list(required)}", f"keys {sorted(keys)} (missing {missing})"
                )
            return {key: archive[key] for key in (*required, *optional) if key in keys}
    except FileNotFoundError as exc:
        raise DataFormatError(path, "a prediction .npz file", "nothing at that path") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFormatError(path, "a readable .npz archive", f"{type(exc).__name__}: {exc}") from exc
