"""CLI sub-commands: argument parsing only; each calls into the package."""

from __future__ import annotations

import argparse
from typing import Any


def add_hidden_alias(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs: Any) -> None:
    """``old`` as an undocumented spelling of the option stored in ``dest``. Why: one vocabulary across
    commands (``--data-root``, ``--pretrain-data``, ``--out``) while commands written with the old spellings
    keep working; the alias has no default of its own, so the documented option's default stands."""
    parser.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
