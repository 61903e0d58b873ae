"""``saip-bench metric <name> ...``: re-score saved predictions with an official metric."""

from __future__ import annotations

import argparse
import json
import math

from rich.console import Console
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    from saip_bench.discovery import import_submodules
    from saip_bench.metrics import METRIC_COMMANDS

    import_submodules("saip_bench.metrics")
    parser = subparsers.add_parser("metric", help="score saved predictions with an official metric")
    metric_sub = parser.add_subparsers(dest="metric", metavar="METRIC", required=True)
    for name in METRIC_COMMANDS.names():
        command = METRIC_COMMANDS.get(name)
        sub = metric_sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.set_defaults(func=_runner(name))


def _runner(name: str):
    def run(args: argparse.Namespace) -> int:
        from saip_bench.metrics import METRIC_COMMANDS

        results = METRIC_COMMANDS.get(name).compute(args)
        print_metrics(results, as_json=args.json, title=name)
        return 0

    return run


def print_metrics(results: dict, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(results, sort_keys=True, default=float))
        return
    table = Table("metric", "value", title=title)
    for key, value in results.items():
        if isinstance(value, float) and not math.isnan(value):
            table.add_row(key, f"{value:.4f}")
        else:
            table.add_row(key, str(value))
    Console().print(table)
