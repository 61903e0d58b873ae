"""Where training scalars go: the run's JSON-lines log, TensorBoard event files, Weights & Biases.

Why one module: the pretraining loop and the fine-tune loop each call ``RunLog.scalars`` at the log points
they already had, and nothing else about TensorBoard or W&B leaks into them. ``--logger`` (a comma list of
``LOGGERS``) is checked when the command line is parsed, so an unknown name or a missing package is one
line naming it (and the pip command) before any work starts.

- ``jsonl``: the loops' own ``log.jsonl`` / ``finetune_log.jsonl`` (they write those; ``RunLog.jsonl``
  tells them whether to).
- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` event files in the run's folder, beside its
  JSON-lines log. A run that starts at step 0 replaces the folder's old event files (as it replaces the
  JSON-lines log); a resumed run purges the events past its starting step (``purge_step``).
- ``wandb``: one W&B run per training run (``pip install 'saip-bench[wandb]'``); ``WANDB_MODE=offline``
  writes it under ``<folder>/wandb`` with no network (``wandb sync`` uploads it later);
  ``WANDB_PROJECT`` names the project (default ``saip-bench``).

Only rank 0 logs under ``torchrun``. Logging reads numbers the loops computed anyway: it draws no random
number and changes no result.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# name -> (module that must import, how to install it); jsonl needs nothing
LOGGERS: dict[str, tuple[str, str] | None] = {
    "jsonl": None,
    "tensorboard": ("tensorboard", "pip install tensorboard (a saip-bench dependency: rerun ./install.sh)"),
    "wandb": ("wandb", "pip install 'saip-bench[wandb]'"),
}
DEFAULT_LOGGERS: tuple[str, ...] = ("jsonl",)
EVENTS_GLOB = "events.out.tfevents.*"

_default: tuple[str, ...] = DEFAULT_LOGGERS


def parse_loggers(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"jsonl,tensorboard"`` -> ``("jsonl", "tensorboard")``; an unknown name or a logger whose package is
    missing is a ``UserError`` naming it (and the install command)."""
    from saip_bench.errors import UserError

    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(part.strip().lower() for part in parts if part.strip()))
    if not names:
        raise UserError(f"--logger: no logger named in {value!r}; expected a comma list of "
                        f"{', '.join(LOGGERS)}")
    for name in names:
        if name not in LOGGERS:
            close = difflib.get_close_matches(name, LOGGERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"--logger: unknown logger {name!r}{hint}; expected a comma list of {', '.join(LOGGERS)}"
            )
        need = LOGGERS[name]
        if need is not None and importlib.util.find_spec(need[0]) is None:
            raise UserError(f"--logger {name}: the {need[0]!r} package is not installed; {need[1]}")
        if name == "wandb" and (problem := wandb_login_problem()):
            raise UserError(f"--logger wandb: {problem}")
    return names


WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")


def wandb_login_problem() -> str | None:
    """Why an online W&B run would fail to start, found before any work: no API key in ``$WANDB_API_KEY``
    nor in the netrc entry ``wandb login`` writes for the server (``$WANDB_BASE_URL``). Why here: wandb itself
    only finds out in ``wandb.init``, i.e. after the world, the data and the pretraining of the first unit.
    Offline (``WANDB_MODE=offline``) and disabled runs need no key. Read without importing wandb (slow)."""
    import netrc
    import os
    from urllib.parse import urlparse

    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in WANDB_LOCAL_MODES or os.environ.get("WANDB_API_KEY"):
        return None
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry and entry[2]:
        return None
    return (f"not logged in to {host} (no $WANDB_API_KEY, no entry in {path}); run `wandb login`, or set "
            "WANDB_MODE=offline to write the run locally and `wandb sync` it later")


def _logger_type(value: str) -> tuple[str, ...]:
    from saip_bench.errors import UserError

    try:
        return parse_loggers(value)
    except UserError as exc:  # argparse prints "argument --logger: ..." with the usage line, exit 2
        message = str(exc).removeprefix("--logger: ").removeprefix("--logger ")
        raise argparse.ArgumentTypeError(message) from None


def add_logger_argument(parser: argparse.ArgumentParser) -> None:
    """``--logger`` of ``pretrain``, ``eval``, ``bench`` and ``run_bench.py``."""
    parser.add_argument(
        "--logger", type=_logger_type, default=None, metavar="NAMES",
        help=f"where training scalars go, a comma list of {', '.join(LOGGERS)} (default: "
        f"{','.join(DEFAULT_LOGGERS)}): tensorboard writes event files beside log.jsonl / "
        "finetune_log.jsonl; wandb needs `pip install 'saip-bench[wandb]'` (WANDB_MODE=offline: no network)",
    )


def set_default_loggers(names: Sequence[str] | None) -> None:
    """The loggers of every run of this process that names none (``--logger`` sets it once)."""
    global _default
    _default = parse_loggers(names) if names is not None else DEFAULT_LOGGERS


def default_loggers() -> tuple[str, ...]:
    return _default


def resolve_loggers(names: Sequence[str] | None) -> tuple[str, ...]:
    """``names`` checked, or the process default when None."""
    return _default if names is None else parse_loggers(names)


def _is_rank_zero() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The real-number entries (None, strings and bools are left out)."""
    return {key: float(value) for key, value in values.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)}


class RunLog:
    """The scalar sinks of one training run (a pretraining, or one fine-tune unit), in ``folder``.

    ``start(step)`` once the run knows where it starts, ``scalars(values, step)`` at each log point,
    ``summary(values)`` for final scores, ``close()`` at the end (also on failure: a context manager).
    Writers open at ``start`` (or at the first scalars), so a run that trains nothing leaves no event file.
    """

    def __init__(self, folder: str | Path, loggers: Sequence[str] | None = None, *, name: str,
                 config: Mapping[str, Any] | None = None, enabled: bool | None = None) -> None:
        self.folder = Path(folder)
        self.loggers = resolve_loggers(loggers)
        self.name = name
        self.config = dict(config or {})
        self.enabled = _is_rank_zero() if enabled is None else enabled
        self.start_step = 0
        self.last_step = 0
        self._tb: Any = None
        self._wandb: Any = None
        self._opened = False

    @property
    def jsonl(self) -> bool:
        """Whether the loop writes its JSON-lines log (``jsonl`` among the loggers)."""
        return "jsonl" in self.loggers

    def start(self, step: int = 0) -> None:
        """The run starts after ``step`` completed steps: 0 replaces the folder's event files, a resumed
        run purges the events after ``step``. Opens the writers now, so a sink that cannot start (e.g. W&B
        online without a login) fails before the first training step, not after it."""
        self.start_step = self.last_step = int(step)
        if not self._opened:
            self._open()

    def _open(self) -> None:
        self._opened = True
        if not self.enabled:
            return
        if "tensorboard" in self.loggers:
            from torch.utils.tensorboard import SummaryWriter

            self.folder.mkdir(parents=True, exist_ok=True)
            if self.start_step == 0:  # a fresh run: the folder's old curves belong to a run it replaces
                for old in self.folder.glob(EVENTS_GLOB):
                    old.unlink(missing_ok=True)
            self._tb = SummaryWriter(log_dir=str(self.folder),
                                     purge_step=self.start_step + 1 if self.start_step else None)
            log.debug("%s: TensorBoard events in %s", self.name, self.folder)
        if "wandb" in self.loggers:
            import wandb

            self.folder.mkdir(parents=True, exist_ok=True)
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "saip-bench"), name=self.name, dir=str(self.folder),
                config=self.config, settings=wandb.Settings(console="off"),
            )
            log.debug("%s: W&B run %s (mode %s)", self.name, self._wandb.id,
                      os.environ.get("WANDB_MODE", "online"))

    def scalars(self, values: Mapping[str, Any], step: int) -> None:
        """Every real-number entry of ``values`` under its own tag at ``step``."""
        if not self._opened:
            self._open()
        self.last_step = max(self.last_step, int(step))
        if self._tb is None and self._wandb is None:
            return
        scalars = _numbers(values)
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, int(step))
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final numbers (e.g. a unit's scores): at the last step, and as the W&B run's summary."""
        self.scalars(values, self.last_step)
        if self._wandb is not None:
            self._wandb.summary.update(_numbers(values))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
