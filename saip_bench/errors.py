"""The project's own error types: every user-facing failure is one of these, never a bare traceback."""

from __future__ import annotations

from pathlib import Path


class SaipBenchError(Exception):
    """Base class; the CLI prints these as one line and exits with status 2."""


class UserError(SaipBenchError):
    """A mistake in how saip-bench was called (unknown name, bad option, missing input)."""


class SpecError(SaipBenchError):
    """A task spec, dataset card, preset or record that does not validate."""


class DataFormatError(SaipBenchError):
    """A dataset file that is missing, corrupt or not in the expected native format.

    Always names the file and what was expected, so a user can fix that one file.
    """

    def __init__(self, path: str | Path, expected: str, found: str | None = None) -> None:
        self.path = str(path)
        self.expected = expected
        self.found = found
        message = f"{self.path}: expected {expected}"
        if found:
            message += f", found {found}"
        super().__init__(message)


class TrainingError(SaipBenchError):
    """Training stopped for a reason the user must see (NaN loss, collapse, bad checkpoint)."""
