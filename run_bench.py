#!/usr/bin/env python
"""The main job: ``python run_bench.py`` runs the embedded default benchmark end to end.

With no arguments: generate (or reuse) the synthetic world in the cache (``saip-bench cache path``), pretrain
SAIP and the baselines of the ``default`` bench preset with the CPU ``quick`` pretraining preset (cached),
evaluate all 12 datasets with the fast protocol, and write the boards (Markdown, CSV, HTML, plots) to
``leaderboards/generated/``. Rerunning resumes: finished units are skipped.

The paper protocol on real data (GPUs; works under ``torchrun``, only rank 0 writes)::

    torchrun --nproc_per_node 8 run_bench.py --preset paper --data-root /data --pretrain-data /data/LUP1M

Every option of ``saip-bench bench`` applies (``--shard``, ``--limit``, ``--overwrite``, ``--dry-run``...).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import saip_bench  # noqa: F401  (first: installs the torchvision CPU shim)

REPO = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    from saip_bench.commands.bench import add_bench_arguments, config_from_args, dry_run
    from saip_bench.errors import SaipBenchError

    parser = argparse.ArgumentParser(prog="run_bench.py", description=__doc__.split("\n\n")[0])
    add_bench_arguments(parser)
    parser.add_argument(
        "--leaderboard-out",
        type=Path,
        default=REPO / "leaderboards" / "generated",
        help="where the boards go (default leaderboards/generated)",
    )
    parser.add_argument("--no-leaderboard", action="store_true", help="only run units, build no boards")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    from saip_bench import logs, logsinks

    logs.add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    if args.workers == 1 and "--workers" not in (argv if argv is not None else sys.argv[1:]):
        args.workers = default_workers(args)
    try:
        logs.set_verbosity(args.verbose, args.quiet)
        logsinks.set_default_loggers(args.logger)  # checked when parsed; None: jsonl
        config = config_from_args(args)
        if args.run_dir is None:
            config.run_dir = REPO / "runs" / config.preset.name
        if args.dry_run:
            return dry_run(config, args.json)
        return run(config, args)
    except SaipBenchError as exc:
        if args.traceback:
            raise
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2


def default_workers(args: argparse.Namespace) -> int:
    """CPU-only and not under torchrun: one single-threaded worker per core (at most 4); else 1."""
    import torch

    from saip_bench.commands.bench import resolve_shard

    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    if torch.cuda.is_available() or distributed or resolve_shard(args.shard) != (1, 1):
        return 1
    if args.dry_run or args.pretrain_only:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def run(config, args: argparse.Namespace) -> int:
    from saip_bench.bench.runner import DistInfo
    from saip_bench.bench.store import load_records
    from saip_bench.commands.bench import execute
    from saip_bench.leaderboard import write_boards
    from saip_bench.utils import console

    start = time.perf_counter()
    ok = execute(config, args)
    if not DistInfo.from_env().is_main:
        return 0 if ok else 1  # rank 0 reports for every rank (its boards and summary line)
    if not args.no_leaderboard and not args.pretrain_only:
        records = load_records([config.run_dir])
        if records:
            written = write_boards(records, args.leaderboard_out, compare="paper")
            console.print(f"boards: {len(written)} file(s) under {args.leaderboard_out}")
    console.print(
        f"run_bench.py: {time.perf_counter() - start:.0f} s wall ({args.workers} worker(s), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}){'' if ok else ', some units FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
