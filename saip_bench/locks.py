"""One owner per folder: owner locks for run folders, checkpoint-cache entries and synthetic worlds, and
worker processes that die with their parent.

Why: two processes writing one folder duplicate hours of work or tear each other's files (a second
world generator deleting what the first is writing; two benchmarks computing the same units). Each such
folder gets a lock file naming its owner (pid, host, what it does, since when); a second process waits
for it (bounded, saying whom it waits for) or stops with one line naming the owner.

How: the lock is a ``flock`` on the lock file, so the kernel releases it the moment its owner dies
(``kill -9`` included); nothing can stay locked by a dead process on this host. The owner record written
into the file is for people and for the take-over message: a record left behind by an owner that did
not release (it died) is reported when the next process takes the lock over. Lock files are never
deleted (deleting a flock'ed file lets two processes lock two different files of one name). On a
network file system flock is as good as the server's lock support (NFSv4: fine).

Workers: ``die_with_parent`` asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``, through ctypes) to
SIGKILL the process when its parent dies; where that cannot work (other systems; multiprocessing's
forkserver children, whose parent is the fork server) a watchdog thread checks the owner pid every
``WATCHDOG_S`` seconds. ``python -m saip_bench.locks --die-with PID MODULE ARGS...`` runs ``MODULE`` as
``__main__`` in such a worker (how ``--workers`` starts its ``saip-bench`` processes). Records stay
atomic (temp file + rename), so a worker killed mid-write leaves no half record.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from saip_bench.errors import UserError

WAIT_ENV = "SAIP_BENCH_LOCK_WAIT"  # seconds; overrides every default wait (0: never wait)
NOTIFY_EVERY_S = 60.0  # while waiting, one message per minute
WATCHDOG_S = 0.1
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

Notify = Callable[[str], None]


class LockBusy(UserError):
    """The folder has another live owner (and we may not, or no longer, wait for it)."""


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    purpose: str
    since: str  # UTC, ISO 8601

    @classmethod
    def me(cls, purpose: str) -> Owner:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(os.getpid(), socket.gethostname(), purpose, since)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} ({self.purpose}, since {self.since})"

    def alive(self) -> bool | None:
        """Whether the owner process still exists; None when it runs on another host (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) is all we know


def read_owner(path: str | Path) -> Owner | None:
    """The owner recorded in a lock file (None: free and cleanly released, missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text() or "null")
        return Owner(int(data["pid"]), str(data["host"]), str(data["purpose"]), str(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def default_wait(seconds: float) -> float:
    """``seconds``, unless ``$SAIP_BENCH_LOCK_WAIT`` says otherwise (a bad value is an error, not ignored)."""
    value = os.environ.get(WAIT_ENV)
    if value is None or value.strip() == "":
        return seconds
    try:
        wait = float(value)
    except ValueError:
        raise UserError(f"${WAIT_ENV}={value!r}: expected a number of seconds") from None
    if wait < 0:
        raise UserError(f"${WAIT_ENV}={value!r}: expected a number of seconds >= 0")
    return wait


def _console_notify(message: str) -> None:
    """Whom we wait for: a warning (``-qq`` hides it), since the run is held up."""
    logging.getLogger(__name__).warning(message)


# lock files held by this process: path -> [pid, fd, depth] (re-entrant; a forked child holds none)
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _write_owner(fd: int, owner: Owner | None) -> None:
    os.ftruncate(fd, 0)
    if owner is not None:
        os.pwrite(fd, (json.dumps(asdict(owner)) + "\n").encode(), 0)


OWNER_SETTLE_S = 2.0  # how long a waiter gives a new holder to write its owner record, so messages name it


def _busy_message(what: str, owner: Owner | None, path: Path, hint: str) -> str:
    if owner is None:
        who = "another process (no owner recorded yet)"
    else:
        who = owner.describe()
        if owner.alive() is False:  # the recorded owner died, a process it started still holds the lock
            who += ", now held by a process it started"
    return f"{what} is in use by {who} (lock {path}){'; ' + hint if hint else ''}"


@contextlib.contextmanager
def owner_lock(
    path: str | Path,
    what: str,
    purpose: str,
    wait: float = 0.0,
    hint: str = "",
    notify: Notify | None = None,
    poll: float = 0.2,
) -> Iterator[Owner]:
    """Hold the lock file ``path`` for the body; yields the owner written into it.

    ``what`` names the locked thing in messages ("run folder runs/x"); ``purpose`` says what the owner
    does. Another live owner: wait up to ``wait`` seconds (a message when waiting starts and once a
    minute), then ``LockBusy`` naming it and ``hint``. Re-entrant within one process.
    """
    path = Path(path)
    notify = notify or _console_notify
    key = str(path.resolve())
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held[0] == os.getpid():
            held[2] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield read_owner(path) or Owner.me(purpose)
        finally:
            with _HELD_GUARD:
                _HELD[key][2] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        _acquire(fd, path, what, wait, hint, notify, poll)
        previous = read_owner(path)
        if previous is not None and previous.pid != os.getpid():  # it never released: it died
            state = {False: "is gone", None: "left it (on another host)"}.get(previous.alive(), "let go")
            notify(f"{what}: previous owner {previous.describe()} {state}; taking over (lock {path})")
        me = Owner.me(purpose)
        _write_owner(fd, me)
        with _HELD_GUARD:
            _HELD[key] = [os.getpid(), fd, 1]
        try:
            yield me
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            _write_owner(fd, None)  # an empty lock file = released cleanly
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, what: str, wait: float, hint: str, notify: Notify, poll: float) -> None:
    if _try_flock(fd):
        return
    owner = read_owner(path)
    settle = time.monotonic() + OWNER_SETTLE_S
    while owner is None and time.monotonic() < settle:  # the holder writes its record just after flock
        time.sleep(0.02)
        if _try_flock(fd):
            return
        owner = read_owner(path)
    if wait <= 0:
        raise LockBusy(_busy_message(what, owner, path, hint))
    start = time.monotonic()
    notify(f"waiting for {_busy_message(what, owner, path, '')} to finish (up to {wait:.0f} s)")
    told = start
    while not _try_flock(fd):
        now = time.monotonic()
        if now - start >= wait:
            owner = read_owner(path) or owner
            raise LockBusy(f"gave up after {wait:.0f} s: {_busy_message(what, owner, path, hint)}")
        if now - told >= NOTIFY_EVERY_S:
            told = now
            holder = _busy_message(what, read_owner(path), path, "")
            notify(f"still waiting ({now - start:.0f} s) for {holder}")
        time.sleep(poll)


class Claim:
    """A non-blocking lock held until ``release`` (for one unit of work at a time, not a ``with`` body)."""

    def __init__(self, path: str | Path, what: str, purpose: str) -> None:
        self._context = owner_lock(path, what, purpose, wait=0.0)
        self._context.__enter__()

    def release(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)


# ------------------------------------------------------------------------------------ worker processes
def die_with_parent(parent_pid: int) -> str:
    """Make this process end when ``parent_pid`` (its parent, or the process that owns the work) ends.

    Returns how: ``pdeathsig`` (Linux, ``parent_pid`` is the direct parent: the kernel sends SIGKILL the
    moment it exits) or ``watchdog`` (a daemon thread checking every ``WATCHDOG_S`` that ``parent_pid``
    lives; for other systems, and for multiprocessing's forkserver children, whose direct parent is the
    fork server: it outlives the owner as long as any of its children runs). Exits at once if the parent
    is already gone.
    """
    direct = os.getppid() == parent_pid
    armed = False
    if direct and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    # the parent may have died before the signal was armed (then we were re-parented already)
    if not pid_alive(parent_pid) or (direct and os.getppid() != parent_pid):
        os._exit(137)
    if armed:
        return "pdeathsig"
    parent = os.getppid()

    def watch() -> None:
        while pid_alive(parent_pid) and (not direct or os.getppid() == parent):
            time.sleep(WATCHDOG_S)
        os._exit(137)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    return "watchdog"


def worker_command(module: str, argv: list[str], parent_pid: int | None = None) -> list[str]:
    """Command line running ``python -m module argv...`` as a worker that dies with this process."""
    pid = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-m", "saip_bench.locks", "--die-with", str(pid), module, *argv]


def _main(argv: list[str]) -> None:
    import runpy

    if len(argv) < 3 or argv[0] != "--die-with" or not argv[1].isdigit():
        raise SystemExit("usage: python -m saip_bench.locks --die-with PID MODULE [ARGS...]")
    die_with_parent(int(argv[1]))
    sys.argv = [argv[2], *argv[3:]]
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
