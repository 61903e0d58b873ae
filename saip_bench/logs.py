"""Python ``logging`` for the package's diagnostic messages: the ``saip_bench`` logger hierarchy.

Why: a message of a module (``logging.getLogger(__name__)``) can be silenced (``-q``), expanded (``-v``:
debug details such as where event files go) or routed by an embedding program, while the commands print
exactly what they printed before: the package logger's one handler writes through the rich console
(stderr), INFO as plain text, WARNING in yellow, ERROR in red. Progress bars and tables stay on the console.

An embedding program that wants its own handlers calls ``logging.getLogger("saip_bench").handlers.clear()``
and sets ``propagate = True``.
"""

from __future__ import annotations

import argparse
import logging

ROOT = "saip_bench"
_STYLES = {logging.DEBUG: "dim", logging.WARNING: "yellow", logging.ERROR: "red",
           logging.CRITICAL: "bold red"}


class ConsoleHandler(logging.Handler):
    """Writes records through ``saip_bench.utils.console`` (so they interleave with progress bars)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from saip_bench.utils import console  # lazy: importing the package stays cheap

            style = _STYLES.get(record.levelno, "")
            console.print(self.format(record), style=style or None, markup=False, highlight=False,
                          soft_wrap=True)
        except Exception:  # a logging call never breaks the run
            self.handleError(record)


def install() -> logging.Logger:
    """The package logger with its console handler, INFO by default (idempotent)."""
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False  # printed once, by our handler
    return logger


def level_for(verbose: int = 0, quiet: int = 0) -> int:
    """``-v``: DEBUG; ``-q``: WARNING; ``-qq``: ERROR; neither: INFO (what the commands always printed)."""
    if verbose and quiet:
        from saip_bench.errors import UserError

        raise UserError("-v/--verbose and -q/--quiet contradict each other: give one")
    if verbose:
        return logging.DEBUG
    return {0: logging.INFO, 1: logging.WARNING}.get(quiet, logging.ERROR)


def set_verbosity(verbose: int = 0, quiet: int = 0) -> int:
    """Set the package logger's level from the -v/-q counts; returns the level."""
    level = level_for(verbose, quiet)
    install().setLevel(level)
    return level


def verbosity_flags() -> list[str]:
    """The -v/-q flags that give a child process (a bench worker) this process's level."""
    level = logging.getLogger(ROOT).getEffectiveLevel()
    if level <= logging.DEBUG:
        return ["-v"]
    return [] if level <= logging.INFO else ["-q"] if level <= logging.WARNING else ["-qq"]


def add_verbosity_arguments(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """``-v/--verbose`` and ``-q/--quiet`` (counted). ``suppress``: a sub-command's copy, which must not
    reset what the main parser already read (argparse sub-parser defaults would)."""
    default = argparse.SUPPRESS if suppress else 0
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more diagnostic messages (debug details)")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="fewer diagnostic messages: warnings only (-qq: errors only)")
