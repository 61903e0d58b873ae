"""Run a plan with several single-threaded worker processes on one CPU machine (``--workers N``).

Why: the CPU fast protocol is dominated by small models and small batches, where two processes with one
thread each do more work than one process with two threads. The world is generated once by the parent;
then phase 1 pretrains the distinct checkpoints (sharded by checkpoint, so no worker waits on another) and
phase 2 runs the units (``--shard i/N``). Records are the same files a single process writes.

One owner (issue 27): the parent holds the run folder's owner lock (``<run>/.owner.lock``), so a second
``--workers`` run on the same folder stops at once with one line naming the owner instead of overwriting
its logs; the workers share the units through per-unit claims (``RecordStore.claim``). Each worker is
started through ``python -m saip_bench.locks --die-with <parent pid>``: the kernel kills it when the
parent dies (``prctl(PR_SET_PDEATHSIG)``), so killing only the parent leaves no worker writing records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from saip_bench import logs, logsinks
from saip_bench.bench.runner import BenchConfig, BenchRunner, plan_table
from saip_bench.errors import UserError
from saip_bench.locks import owner_lock, worker_command
from saip_bench.utils import console

log = logging.getLogger(__name__)

RUN_LOCK = ".owner.lock"  # in the run folder
WORKER_MODULE = "saip_bench.cli"


def worker_argv(config: BenchConfig, preset_arg: str) -> list[str]:
    """``saip-bench bench`` arguments reproducing ``config`` (without the shard)."""
    argv = [
        "--preset",
        preset_arg,
        "--out",
        str(config.run_dir),
        "--cache-dir",
        str(config.cache_dir),
        "--overwrite",
        config.overwrite.value,
        "--no-progress",
    ]
    if config.data_root is not None:
        argv += ["--data-root", str(config.data_root)]
    if config.world is not None:
        argv += ["--world", str(config.world)]
    if config.pretrain_data is not None:
        argv += ["--pretrain-data", str(config.pretrain_data)]
    for (method, backbone), path in sorted(config.checkpoints.items()):
        argv += ["--checkpoint", f"{method}/{backbone}={path}"]
    if config.limit is not None:
        argv += ["--limit", str(config.limit)]
    for flag, values in (
        ("--methods", config.methods),
        ("--backbones", config.backbones),
        ("--tasks", config.tasks),
        ("--seeds", config.seeds),
    ):
        if values:
            argv += [flag, *map(str, values)]
    if config.device:
        argv += ["--device", config.device]
    if config.cfg_options:
        argv += ["--cfg-options", *config.cfg_options]
    if config.loader_workers is not None:
        argv += ["--loader-workers", str(config.loader_workers)]
    if config.fail_fast:
        argv += ["--fail-fast"]
    if config.keep_finetuned:
        argv += ["--keep-finetuned"]
    if config.compile:
        argv += ["--compile"]
    if logsinks.default_loggers() != logsinks.DEFAULT_LOGGERS:  # this process's --logger
        argv += ["--logger", ",".join(logsinks.default_loggers())]
    argv += logs.verbosity_flags()  # this process's -v/-q
    return argv


def _run_workers(
    argvs: Sequence[list[str]],
    logs: Sequence[Path],
    threads: int,
    tick: Callable[[], None] = lambda: None,
    module: str = WORKER_MODULE,
) -> list[Path]:
    """Start one ``saip-bench`` process per argv (output to its log), wait for all; logs of failed ones.
    Workers die with this process (``saip_bench.locks.worker_command``); ``module`` is a test seam."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = []
    with contextlib.ExitStack() as stack:
        for argv, log in zip(argvs, logs, strict=True):
            log.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(log, "w"))
            procs.append(
                subprocess.Popen(
                    worker_command(module, argv),
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        try:
            while any(proc.poll() is None for proc in procs):
                tick()
                time.sleep(1.0)
        finally:
            for proc in procs:  # interrupted: stop the workers we started (records stay atomic)
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
        tick()
    return [log for proc, log in zip(procs, logs, strict=True) if proc.returncode != 0]


def run_parallel(config: BenchConfig, preset_arg: str, workers: int) -> bool:
    """Generate the world, pretrain in parallel, evaluate in parallel; True when every worker succeeded."""
    if config.shard != (1, 1):
        raise UserError("--workers splits the plan itself; do not combine it with --shard")
    run_dir = Path(config.run_dir)
    with owner_lock(run_dir / RUN_LOCK, f"run folder {run_dir}", f"saip-bench --workers {workers}",
                    hint="wait for it to finish, or give another --out"):
        return _run_parallel_locked(config, preset_arg, workers)


def _run_parallel_locked(config: BenchConfig, preset_arg: str, workers: int) -> bool:
    threads = max(1, (os.cpu_count() or 1) // workers)
    runner = BenchRunner(config)
    planned = runner.plan()  # generates the world (once, here) and shows what will run
    if log.isEnabledFor(logging.INFO):  # -q hides the plan
        console.print(plan_table(planned, config.preset, config))
    todo = [p for p in planned if p.status == "run"]
    if not todo:
        log.info("nothing to run: every unit of the plan has a matching record")
        return True
    if config.preset.data == "synthetic":  # workers use the world generated here, as is
        config = dataclasses.replace(config, world=runner.world_root())
    base = worker_argv(config, preset_arg)
    logs = Path(config.run_dir) / "logs"
    log.info(f"{workers} worker processes x {threads} thread(s); logs under {logs}")
    shards = range(1, workers + 1)
    start = time.perf_counter()
    failed = _run_workers(
        [["bench", *base, "--shard", f"{i}/{workers}", "--pretrain-only"] for i in shards],
        [logs / f"pretrain-{i}.log" for i in shards],
        threads,
    )
    if failed:  # the units of a missing checkpoint fail on their own (logged); the others still run
        log.error(f"some pretraining failed; see {', '.join(map(str, failed))}")
    log.info(f"pretraining phase done in {time.perf_counter() - start:.0f} s")
    paths = {runner.store.path(p.unit) for p in todo}
    before = {p: p.stat().st_mtime_ns if p.exists() else None for p in paths}

    def finished() -> int:
        return sum(1 for p in paths if p.exists() and p.stat().st_mtime_ns != before[p])

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not config.show_progress) as progress:
        task = progress.add_task(f"[bold]benchmark units ({workers} workers)", total=len(todo))
        failed = _run_workers(
            [["bench", *base, "--shard", f"{i}/{workers}"] for i in shards],
            [logs / f"units-{i}.log" for i in shards],
            threads,
            lambda: progress.update(task, completed=finished()),
        )
    if failed:
        log.error(f"some units failed; see {', '.join(map(str, failed))} and {config.run_dir}/failures")
    return not failed
