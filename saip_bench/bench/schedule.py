"""Who runs what, and when, under ``torchrun``: the distributed rules of the bench in one place.

The rule (docs/benchmark.md, "Under torchrun"): with W ranks the bench first pretrains every checkpoint
the plan needs, each once, with DDP over all ranks (all ranks together, in plan order, so collectives pair
up); then each unit is either run data-parallel by all ranks together, or spread: rank r runs units
r, r + W, r + 2W, ... of the spread ones, one whole unit per process (``unit_mode``, the rule below).
The data-parallel units run first, one after another in plan order on every rank (their collectives
pair up), then each rank its spread share. Unit execution (``BenchRunner.run_unit``) knows nothing of
ranks beyond the ``data_parallel`` flag it passes to the task (tasks/parallel.py splits the batch).

Spread or data-parallel (``unit_mode``, ``--unit-parallel auto``): a unit runs data-parallel over all W
ranks when it is a fine-tune (frozen/linear protocols train a head on cached features: seconds), on
GPUs, long (no ``max_steps`` cap below ``LONG_STEPS``: the CPU protocols are short), and its spec batch
splits over the ranks with at least ``MIN_PER_RANK_BATCH`` samples per GPU (fewer leave a GPU idle
between all-reduces); every other unit is spread. ``--unit-parallel spread`` spreads everything (the
behaviour before data-parallel fine-tuning); ``data`` runs every fine-tune data-parallel (CPU tests,
``saip-bench eval`` of one long unit), and its batch must then split (a clear error otherwise).

Faults end cleanly:
- every collective has a timeout (``$SAIP_DIST_TIMEOUT_S``, default 1800 s), so a rank stuck in one
  raises instead of waiting for ever;
- after each shared pretraining the ranks agree on its outcome; when some failed and others did not, the
  run stops on every rank with one message naming the ranks (their collectives could no longer pair up);
- a data-parallel unit agrees on every step that may fail on one rank (tasks/parallel.py: ``agreed``,
  ``on_rank0``, the per-micro-step outcome), so a failure fails the unit on every rank, never a hang;
- after the shared phase and the data-parallel units there is no collective at all: ranks finish their
  spread units at different times (a 210-epoch COCO unit beside a linear probe), and a collective
  would time out. Each rank writes a heartbeat file
  (``<run>/ranks/rank<r>.json``: unit, pid, host, beat time) and, at the end, its report; rank 0 waits
  for the reports, and stops with the rank and unit named when a heartbeat goes stale (the rank died
  without its launcher noticing, e.g. launched by hand);
- a rank stopped by a signal (torchrun stops the others when one rank dies) says which unit it was in.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from saip_bench.errors import UserError
from saip_bench.utils import atomic_write_json

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 1800.0
HEARTBEAT_EVERY_S = 15.0
STALE_AFTER_S = 300.0  # a heartbeat this old (no beat for 20 periods) means the rank is gone
LEAVE_WAIT_S = 60.0  # rank 0 exiting non-zero waits this long at most for the others to leave
LEAVE_GRACE_S = 2.0  # then this long for their interpreters to end (process-group teardown included)


def collective_timeout_s() -> float:
    """``$SAIP_DIST_TIMEOUT_S`` (seconds), the bound on any one collective."""
    text = os.environ.get("SAIP_DIST_TIMEOUT_S", "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UserError(f"SAIP_DIST_TIMEOUT_S must be a positive number of seconds, got {text!r}")
    return value


@dataclass
class DistInfo:
    """Process placement under ``torchrun`` (defaults: one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        def number(name: str, default: int) -> int:
            text = os.environ.get(name, str(default))
            try:
                return int(text)
            except ValueError:
                raise UserError(f"${name} must be an integer (set by torchrun), got {text!r}") from None

        info = cls(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))
        if info.world_size < 1 or not 0 <= info.rank < info.world_size:
            raise UserError(f"RANK={info.rank} with WORLD_SIZE={info.world_size}: "
                            "need 0 <= RANK < WORLD_SIZE")
        return info

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def group(self) -> bool:
        import torch

        return self.world_size > 1 and torch.distributed.is_initialized()

    def init(self) -> None:
        """Join the process group (NCCL on GPUs, gloo on CPUs) with a bounded collective timeout."""
        import torch

        if self.world_size <= 1 or torch.distributed.is_initialized():
            return
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise UserError(f"WORLD_SIZE={self.world_size} but {', '.join(missing)} not set: launch with "
                            "torchrun (docs/benchmark.md, 'Under torchrun')")
        cuda = torch.cuda.is_available()
        if cuda:  # NCCL binds each rank to its GPU; without this every rank starts on GPU 0
            torch.cuda.set_device(self.local_rank)
        timeout = datetime.timedelta(seconds=collective_timeout_s())
        try:
            torch.distributed.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
        except (RuntimeError, ValueError, OSError) as exc:
            raise UserError(f"rank {self.rank}: could not join the process group at "
                            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {exc}") from exc

    def barrier(self) -> None:
        import torch

        if self.group:
            torch.distributed.barrier()


SPREAD = "spread"
DATA_PARALLEL = "data-parallel"
UNIT_PARALLEL_CHOICES = ("auto", "spread", "data")
MIN_PER_RANK_BATCH = 16  # below this per GPU a step is too short to hide the gradient all-reduce
LONG_STEPS = 1000  # a max_steps cap below this marks a short (CPU / smoke) protocol


def unit_mode(kind: str, batch_size: int, max_steps: int | None, world: int, on_gpu: bool,
              policy: str = "auto") -> str:
    """``DATA_PARALLEL`` or ``SPREAD`` for one unit of protocol ``kind`` (the rule: module docstring)."""
    if policy not in UNIT_PARALLEL_CHOICES:
        raise UserError(f"--unit-parallel {policy!r}: expected one of {', '.join(UNIT_PARALLEL_CHOICES)}")
    if world <= 1 or kind != "finetune" or policy == "spread":
        return SPREAD
    if policy == "data":
        return DATA_PARALLEL
    long = max_steps is None or max_steps >= LONG_STEPS
    fills = batch_size % world == 0 and batch_size // world >= MIN_PER_RANK_BATCH
    return DATA_PARALLEL if on_gpu and long and fills else SPREAD


def spread(units: Sequence[T], dist: DistInfo) -> list[T]:
    """This rank's share: units r, r + W, ... (round-robin keeps the shares within one unit in size)."""
    return list(units[dist.rank::dist.world_size])


def broadcast(value: T, dist: DistInfo) -> T:
    """Rank 0's ``value`` on every rank."""
    import torch

    if not dist.group:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def agree_on_failure(failed: bool, what: str, dist: DistInfo) -> bool:
    """Whether ``what`` failed, the same answer on every rank; a split verdict stops the run.

    Why: a shared pretraining runs collectives; a rank that failed alone (an out-of-memory on one GPU)
    left the others inside a collective it will never join, and whatever follows would pair up wrongly.
    """
    import torch

    if not dist.group:
        return failed
    flags = torch.tensor([int(failed)], dtype=torch.int64)
    every = [torch.zeros_like(flags) for _ in range(dist.world_size)]
    torch.distributed.all_gather(every, flags)
    failing = [rank for rank, flag in enumerate(every) if int(flag.item())]
    if failing and len(failing) < dist.world_size:
        raise DistributedFault(f"{what} failed on rank(s) {failing} only (the other ranks finished it); "
                               "the ranks can no longer work together: stopping every rank (rerun resumes)")
    return bool(failing)


class DistributedFault(RuntimeError):
    """The ranks of one launch can no longer work together; the whole run stops."""


@dataclass
class RankBoard:
    """Heartbeats and end-of-run reports of every rank, as files under ``<run>/ranks/``.

    Files, not collectives: after the shared pretraining ranks finish at different times. ``token``
    names this launch (rank 0 draws it, every rank receives it) so files of an earlier launch are
    never read as this one's.
    """

    run_dir: Path
    dist: DistInfo
    token: str = ""
    unit: str = "starting"
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return Path(self.run_dir) / "ranks"

    def heartbeat_path(self, rank: int) -> Path:
        return self.folder / f"rank{rank}.json"

    def report_path(self, rank: int) -> Path:
        return self.folder / f"rank{rank}.report.json"

    def start(self) -> None:
        """Draw the launch token (rank 0), share it, and beat every ``HEARTBEAT_EVERY_S`` seconds."""
        self.token = broadcast(uuid.uuid4().hex if self.dist.is_main else "", self.dist)
        self.beat()
        self._thread = threading.Thread(target=self._beat_loop, name="saip-heartbeat", daemon=True)
        self._thread.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            try:
                self.beat()
            except OSError:  # a full disk must not kill the unit; rank 0 will see the stale beat
                pass

    def beat(self) -> None:
        atomic_write_json(self.heartbeat_path(self.dist.rank), {
            "token": self.token, "rank": self.dist.rank, "unit": self.unit, "pid": os.getpid(),
            "host": socket.gethostname(), "beat": time.time()})

    def set_unit(self, unit: str) -> None:
        self.unit = unit
        self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def finish(self, written: list[str], failed: dict[str, str]) -> None:
        self.stop()
        self.unit = "finished"
        self.beat()
        atomic_write_json(self.report_path(self.dist.rank),
                          {"token": self.token, "written": written, "failed": failed})

    def left_path(self, rank: int) -> Path:
        return self.folder / f"rank{rank}.left.json"

    def leave(self) -> None:
        """A rank other than 0, done with everything it does in this launch: say so (``wait_for_leavers``)."""
        atomic_write_json(self.left_path(self.dist.rank), {"token": self.token, "rank": self.dist.rank})

    def wait_for_leavers(self, timeout_s: float = LEAVE_WAIT_S, grace_s: float = LEAVE_GRACE_S,
                         poll_s: float = 0.2) -> list[int]:
        """Rank 0, about to exit non-zero: wait until every other rank has left (at most ``timeout_s``),
        then ``grace_s`` for their interpreters to end. Why: torchrun stops the ranks still alive when one
        exits non-zero, so a rank that had finished its units but not yet exited was killed by SIGTERM and
        reported as a second failure (seen in a CI run). Returns the ranks that never said they left."""
        deadline = time.monotonic() + timeout_s
        others = [rank for rank in range(self.dist.world_size) if rank != self.dist.rank]
        while True:
            missing = [rank for rank in others if self._read(self.left_path(rank)) is None]
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
        if others:
            time.sleep(grace_s)
        return missing

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("token") == self.token else None

    def last_units(self) -> dict[int, str]:
        """What each rank of this launch was doing at its last heartbeat (unfinished ranks only)."""
        units: dict[int, str] = {}
        for rank in range(self.dist.world_size):
            beat = self._read(self.heartbeat_path(rank))
            if beat is not None and beat.get("unit") != "finished":
                units[rank] = str(beat.get("unit"))
        return units

    def gather(self, on_wait: Callable[[list[int], dict[int, str]], None] = lambda ranks, units: None,
               poll_s: float = 1.0, stale_after_s: float = STALE_AFTER_S) -> list[dict[str, Any]]:
        """Rank 0: every rank's report, waiting for those still running (no timeout while their
        heartbeats are fresh); a stale heartbeat raises ``DistributedFault`` naming rank and unit."""
        reports: dict[int, dict[str, Any]] = {}
        started = time.time()
        last_note = 0.0
        while True:
            for rank in range(self.dist.world_size):
                if rank not in reports and (report := self._read(self.report_path(rank))) is not None:
                    reports[rank] = report
            waiting = [rank for rank in range(self.dist.world_size) if rank not in reports]
            if not waiting:
                return [reports[rank] for rank in range(self.dist.world_size)]
            now = time.time()
            units: dict[int, str] = {}
            for rank in waiting:
                beat = self._read(self.heartbeat_path(rank))
                last = beat["beat"] if beat else started
                units[rank] = beat["unit"] if beat else "(no heartbeat yet)"
                if now - last > stale_after_s:
                    host = f" on {beat['host']} (pid {beat['pid']})" if beat else ""
                    raise DistributedFault(f"rank {rank}{host} stopped answering {now - last:.0f} s ago "
                                           f"during {units[rank]}; records already written are kept "
                                           "and a rerun resumes")
            if now - last_note >= 60:
                on_wait(waiting, units)
                last_note = now
            time.sleep(poll_s)


def stop_message_on_signal(board: RankBoard) -> Callable[[], None]:
    """On SIGTERM (torchrun stopping the ranks after one failed) say which rank stopped in which unit,
    then exit 143 as the signal would. Returns a function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        others = board.last_units()
        others.pop(board.dist.rank, None)
        where = "; ".join(f"rank {rank} was in {unit}" for rank, unit in sorted(others.items()))
        print(f"saip-bench: rank {board.dist.rank} on {socket.gethostname()} stopped by signal "
              f"{signal.Signals(signum).name} during {board.unit} (the launcher stops every rank when one "
              f"fails){'; at their last heartbeats ' + where if where else ''}; records already written are "
              "kept, a rerun resumes", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def slurm_array_shard(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """``(i, n)`` (1-based) from a SLURM job array, or None outside one.

    ``--array=0-7`` and ``--array=1-8`` both give shards 1..8: the index is taken relative to
    ``SLURM_ARRAY_TASK_MIN``. Arrays with a step (``0-15:2``) are refused: their ids are not contiguous.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        low = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        high = int(env.get("SLURM_ARRAY_TASK_MAX", str(low + count - 1)))
    except ValueError:
        raise UserError("SLURM_ARRAY_TASK_ID/COUNT/MIN/MAX must be integers, got "
                        f"{ {k: v for k, v in env.items() if k.startswith('SLURM_ARRAY_TASK')} }") from None
    if high - low + 1 != count:
        raise UserError(f"SLURM array ids {low}-{high} are not {count} contiguous ids (an array with a "
                        "step?): pass --shard i/n explicitly")
    if not low <= task <= high:
        raise UserError(f"SLURM_ARRAY_TASK_ID={task} outside {low}-{high}")
    return task - low + 1, count
