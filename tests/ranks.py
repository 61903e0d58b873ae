"""Run a function on 2 forked gloo ranks in a test, and fail (never hang) when a rank gets stuck.

Why a helper: a rank forked from the pytest process inherits its OpenMP thread pool; once the parent
has run a multi-threaded convolution, the child's first multi-threaded op waits forever on that pool
(CI stalled for 90 minutes on exactly this). Each child therefore runs single-threaded, and the parent
waits at most ``timeout_s`` before killing the ranks and failing the test with the stuck ranks named.
Fork, not spawn: the children reuse the imported modules (spawn re-imports torch and timm per rank).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _single_threaded(rank: int, fn: Callable[..., None], *args: Any) -> None:
    torch.set_num_threads(1)
    fn(rank, *args)


def run_ranks(fn: Callable[..., None], args: tuple = (), nprocs: int = 2, timeout_s: float = 300.0) -> None:
    """``fn(rank, *args)`` on ``nprocs`` forked processes; raises if one fails, fails the test if one is
    still running after ``timeout_s``."""
    context = mp.start_processes(_single_threaded, args=(fn, *args), nprocs=nprocs, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            stuck = [rank for rank, process in enumerate(context.processes) if process.is_alive()]
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            for process in context.processes:
                process.join(5)
            pytest.fail(f"ranks {stuck} still running after {timeout_s:.0f} s (a collective or a thread pool "
                        "deadlock); killed")


def race(target: Callable[..., None], args: tuple = (), count: int = 2, timeout_s: float = 60.0) -> list[int]:
    """Start ``count`` forked processes of ``target(*args, go)`` that begin together when ``go`` is set
    (a multiprocessing Event, the last argument), wait for them, and return their pids; a child that
    fails or is still running after ``timeout_s`` fails the test. Why: the concurrency tests (two runs
    on one cache, world or run folder) need both processes to reach the contested lock at once."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")  # the children keep the test's monkeypatches
    go = fork.Event()
    children = [fork.Process(target=target, args=(*args, go)) for _ in range(count)]
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
