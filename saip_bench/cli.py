"""``saip-bench``: one entry point; each sub-command lives in ``saip_bench.commands.<name>``.

Why: the CLI holds no logic, only argument parsing and one-line errors; the work is in the package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from saip_bench import logs, logsinks
from saip_bench.errors import SaipBenchError

# Each module defines ``register(subparsers)``; its parser sets ``func(args) -> int``.
COMMAND_MODULES = (
    "list_cmd",
    "data",
    "pretrain",
    "eval",
    "bench",
    "leaderboard",
    "metric",
    "profile",
    "export",
    "verify",
    "describe",
    "cache",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saip-bench",
        description=(
            "Pretrain and benchmark lightweight human-centric vision models (SAIP and baselines) "
            "on 9 tasks / 12 datasets, from real data or the built-in synthetic world."
        ),
    )
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    logs.add_verbosity_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"saip_bench.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"saip_bench.commands.{name}":
                continue  # command not built in this checkout
            raise
        module.register(subparsers)
    for subparser in subparsers.choices.values():  # `saip-bench bench -q` as well as `saip-bench -q bench`
        logs.add_verbosity_arguments(subparser, suppress=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        logs.set_verbosity(args.verbose, args.quiet)
        logsinks.set_default_loggers(getattr(args, "logger", None))  # checked when parsed; None: jsonl
        return int(args.func(args) or 0)
    except SaipBenchError as exc:
        if args.traceback:
            raise
        print(f"saip-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("saip-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
