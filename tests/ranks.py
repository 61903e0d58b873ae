"""Run a function on 2 forked gloo ranks in a test, and fail (never hang) when a rank gets stuck.

Why a helper: a rank forked from the pytest process inherits its OpenMP thread pool; once the parent
has run a multi-threaded convolution, the child's first multi-threaded op waits forever on that pool
(CI stalled for 90 minutes on exactly this). Each child therefore runs single-threaded, and the parent
waits at most ``timeout_s`` before killing the ranks and failing the test with the stuck ranks named and
their Python stacks (each rank registers a faulthandler dump on SIGUSR1), so a rare hang on CI says where.
Fork, not spawn: the children reuse the imported modules (spawn re-imports torch and timm per rank).

The children get their one thread from the parent (``forking_single_threaded``), not by calling
``torch.set_num_threads`` after the fork: that call reaches into OpenMP, MKL and the XNNPACK thread
pool, whose locks a fork copies in whatever state the parent's threads left them. A hang this helper
caught (1 of 5 full suite runs in one session, not reproduced since) was a fresh rank stuck inside that
call, before any code under test had run.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_STACKS: list[IO[str]] = []  # the rank's open stack file, kept alive for faulthandler


@contextlib.contextmanager
def forking_single_threaded() -> Iterator[None]:
    """One intra-op thread in this process while it forks, so that every child starts with one (the
    setting is process memory, which a fork copies) and never has to set it; the parent's own setting
    is back when the block ends."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _rank_entry(rank: int, stacks: str, fn: Callable[..., None], *args: Any) -> None:
    _STACKS.append(open(Path(stacks, f"rank{rank}.txt"), "w"))  # open for the process's life
    faulthandler.register(signal.SIGUSR1, file=_STACKS[-1], all_threads=True)
    fn(rank, *args)


def _stacks_of(processes: list[Any], stacks: Path) -> str:
    """The Python stacks of the ranks still alive, from their faulthandler on SIGUSR1."""
    alive = [(rank, process) for rank, process in enumerate(processes) if process.is_alive()]
    for _, process in alive:
        os.kill(process.pid, signal.SIGUSR1)
    time.sleep(2.0)
    return "\n".join(f"rank {rank}:\n{(stacks / f'rank{rank}.txt').read_text()[-6000:]}" for rank, _ in alive)


def run_ranks(fn: Callable[..., None], args: tuple = (), nprocs: int = 2, timeout_s: float = 300.0) -> None:
    """``fn(rank, *args)`` on ``nprocs`` forked processes; raises if one fails, fails the test if one is
    still running after ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="rank-stacks-") as stacks:
        _run_ranks(fn, args, nprocs, timeout_s, Path(stacks))


def _run_ranks(fn: Callable[..., None], args: tuple, nprocs: int, timeout_s: float, stacks: Path) -> None:
    with forking_single_threaded():
        context = mp.start_processes(_rank_entry, args=(str(stacks), fn, *args), nprocs=nprocs, join=False,
                                     start_method="fork")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            stuck = [rank for rank, process in enumerate(context.processes) if process.is_alive()]
            where = _stacks_of(context.processes, stacks)
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            for process in context.processes:
                process.join(5)
            pytest.fail(f"ranks {stuck} still running after {timeout_s:.0f} s (a collective or a thread pool "
                        f"deadlock); killed. Their stacks:\n{where}")


def leave_group() -> None:
    """End a rank's part in a test: a barrier, then ``destroy_process_group``. Why the barrier: a rank that
    tears its group down and exits while the other still finishes its last collective can leave that
    other rank waiting (pytorch/pytorch#75097); CI once had rank 1 of a 2-rank test still running after
    rank 0 had finished."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def race(target: Callable[..., None], args: tuple = (), count: int = 2, timeout_s: float = 60.0) -> list[int]:
    """Start ``count`` forked processes of ``target(*args, go)`` that begin together when ``go`` is set
    (a multiprocessing Event, the last argument), wait for them, and return their pids; a child that
    fails or is still running after ``timeout_s`` fails the test. Why: the concurrency tests (two runs
    on one cache, world or run folder) need both processes to reach the contested lock at once."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")  # the children keep the test's monkeypatches
    go = fork.Event()
    children = [fork.Process(target=target, args=(*args, go)) for _ in range(count)]
    with forking_single_threaded():
        for child in children:
            child.start()
    go.set()
    for child in children:
        child.join(timeout_s)
    for child in children:
        if child.is_alive():
            child.kill()
    codes = [child.exitcode for child in children]
    if codes != [0] * count:
        pytest.fail(f"racing processes ended with exit codes {codes} (None: killed after {timeout_s:.0f} s)")
    return [int(child.pid) for child in children]
