"""Owner locks (one owner per folder) and workers that die with their parent (issue 27, item 4)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saip_bench.errors import UserError
from saip_bench.locks import LockBusy, Owner, default_wait, owner_lock, read_owner

FORK = mp.get_context("fork")


def _hold(path: str, ready, release, purpose: str = "holding it for a test") -> None:
    """Child: take the lock, say so, keep it until told (or die holding it when ``release`` is None)."""
    with owner_lock(path, "test folder", purpose):
        ready.set()
        if release is None:
            os.kill(os.getpid(), signal.SIGKILL)  # like kill -9: no release, the owner record stays
        release.wait(30)


@pytest.fixture
def held(tmp_path):
    """A lock held by a live child process; yields (path, child pid)."""
    path = tmp_path / ".owner.lock"
    ready, release = FORK.Event(), FORK.Event()
    child = FORK.Process(target=_hold, args=(str(path), ready, release))
    child.start()
    assert ready.wait(20)
    yield path, child.pid
    release.set()
    child.join(20)


def test_a_second_owner_is_refused_with_pid_and_host(held):
    path, pid = held
    owner = read_owner(path)
    assert owner == Owner(pid, socket.gethostname(), "holding it for a test", owner.since)
    with pytest.raises(LockBusy) as caught, owner_lock(path, "run folder x", "second", hint="use another"):
        pass
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert f"run folder x is in use by pid {pid} on host {socket.gethostname()}" in message
    assert message.endswith("; use another")


def test_waiting_is_bounded_and_says_whom_it_waits_for(held):
    path, pid = held
    messages: list[str] = []
    start = time.monotonic()
    with pytest.raises(LockBusy, match=f"gave up after 1 s: test folder is in use by pid {pid}"), owner_lock(
        path, "test folder", "second", wait=0.6, notify=messages.append, poll=0.05
    ):
        pass
    assert 0.5 < time.monotonic() - start < 5
    assert len(messages) == 1 and messages[0].startswith(f"waiting for test folder is in use by pid {pid}")


def test_a_waiting_process_gets_the_lock_when_the_owner_lets_go(tmp_path):
    path = tmp_path / "x.lock"
    ready, release = FORK.Event(), FORK.Event()
    child = FORK.Process(target=_hold, args=(str(path), ready, release))
    child.start()
    assert ready.wait(20)
    messages: list[str] = []
    releaser = FORK.Process(target=lambda: (time.sleep(0.3), release.set()))
    releaser.start()
    with owner_lock(path, "test folder", "second", wait=20, notify=messages.append, poll=0.05) as me:
        assert read_owner(path) == me and me.pid == os.getpid()
    child.join(20)
    releaser.join(20)
    assert len(messages) == 1  # "waiting for ...", and no take-over: the first owner released cleanly
    assert path.read_text() == ""  # released: empty


def test_the_lock_of_a_dead_owner_is_taken_over_with_a_message(tmp_path):
    path = tmp_path / "x.lock"
    ready = FORK.Event()
    child = FORK.Process(target=_hold, args=(str(path), ready, None))
    child.start()
    child.join(20)
    assert child.exitcode == -signal.SIGKILL
    assert read_owner(path).pid == child.pid  # the dead owner's record was left behind
    messages: list[str] = []
    with owner_lock(path, "synthetic world w", "second", notify=messages.append):
        pass
    assert messages == [
        f"synthetic world w: previous owner pid {child.pid} on host {socket.gethostname()} (holding it for a "
        f"test, since {read_owner_since(messages[0])}) is gone; taking over (lock {path})"
    ]


def read_owner_since(message: str) -> str:
    return message.split("since ", 1)[1].split(")", 1)[0]


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    path = tmp_path / "x.lock"
    with owner_lock(path, "f", "outer") as outer, owner_lock(path, "f", "inner", wait=0):
        assert json.loads(path.read_text())["pid"] == outer.pid == os.getpid()
    assert path.read_text() == ""


def test_lock_wait_environment_variable(monkeypatch):
    monkeypatch.setenv("SAIP_BENCH_LOCK_WAIT", "3")
    assert default_wait(100) == 3
    monkeypatch.setenv("SAIP_BENCH_LOCK_WAIT", "soon")
    with pytest.raises(UserError, match="SAIP_BENCH_LOCK_WAIT='soon': expected a number of seconds"):
        default_wait(100)


WORKER = """
import os, sys, time
from pathlib import Path
out = Path(sys.argv[1])
for step in range(600):
    out.write_text(f"{os.getpid()} {step}")
    time.sleep(0.05)
"""


def test_a_worker_dies_with_its_parent(tmp_path):
    """The parent (like run_bench.py) is killed with SIGKILL; its worker must stop writing at once."""
    out = tmp_path / "beat.txt"
    (tmp_path / "beat_worker.py").write_text(WORKER)
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time; from saip_bench.locks import worker_command; "
         f"subprocess.Popen(worker_command('beat_worker', [{str(out)!r}]), cwd={str(tmp_path)!r}); "
         "time.sleep(60)"],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 30
        while not out.exists() or not out.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "the worker never started"
            time.sleep(0.05)
        worker_pid = int(out.read_text().split()[0])
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while _running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _running(worker_pid)
    if alive:
        os.kill(worker_pid, signal.SIGKILL)
    assert not alive, "the worker outlived its parent"
    last = out.read_text()
    time.sleep(0.3)
    assert out.read_text() == last  # nothing writes any more


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, but maybe not at once)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
