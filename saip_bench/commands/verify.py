"""``saip-bench verify``: fail (exit 1) when records regress against expected scores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check records against expected scores; exit 1 on a regression (a CI gate)",
        description="Each expected entry is matched to records (mean over seeds unless a seed is given) and "
        "fails when it is worse than expected by more than the tolerance, in the metric's direction.",
    )
    parser.add_argument(
        "records",
        nargs="*",
        type=Path,
        default=[Path("runs")],
        help="run folders, records/ folders or record files (default: runs/)",
    )
    parser.add_argument("--expected", type=Path, help="expected scores (JSON or YAML)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="allowed drop in metric units (overrides the file's default; per-entry values win)",
    )
    parser.add_argument("--allow-missing", action="store_true", help="expected entries without records pass")
    parser.add_argument(
        "--write-expected",
        type=Path,
        default=None,
        help="instead of checking, write the records' scores as an expected file (JSON)",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from saip_bench.bench.store import load_records
    from saip_bench.bench.verify import expected_from_records, load_expected, run_checks
    from saip_bench.errors import UserError
    from saip_bench.utils import atomic_write_json, console

    records = load_records(args.records)
    if args.write_expected is not None:
        snapshot = expected_from_records(records, args.tolerance)
        if not snapshot["expected"]:
            raise UserError("no (non-limited) records to snapshot")
        atomic_write_json(args.write_expected, snapshot)
        console.print(f"{len(snapshot['expected'])} expected score(s) -> {args.write_expected}")
        return 0
    if args.expected is None:
        raise UserError("give --expected FILE (or --write-expected FILE to create one)")
    if args.tolerance is not None and args.tolerance < 0:
        raise UserError("--tolerance must be >= 0")
    checks = run_checks(records, load_expected(args.expected), args.tolerance)
    failed = [
        c for c in checks if c.status == "regression" or (c.status == "missing" and not args.allow_missing)
    ]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "unit": c.label(),
                        "metric": c.metric,
                        "expected": c.expected.score,
                        "observed": c.observed,
                        "tolerance": c.tolerance,
                        "status": c.status,
                        "records": c.n_records,
                    }
                    for c in checks
                ],
                indent=1,
            )
        )
    else:
        table = Table(
            "unit",
            "metric",
            "expected",
            "observed",
            "Δ (+ = better)",
            "tolerance",
            "status",
            title=f"verify: {len(checks)} check(s), {len(failed)} failing",
        )
        colours = {"ok": "green", "better": "cyan", "regression": "bold red", "missing": "yellow"}
        for c in checks:
            observed = "—" if c.observed is None else f"{c.observed:.4f}"
            delta = "—" if c.observed is None else f"{c.delta:+.4f}"
            table.add_row(
                c.label(),
                c.metric,
                f"{c.expected.score:.4f}",
                observed,
                delta,
                f"{c.tolerance:g}",
                f"[{colours[c.status]}]{c.status}[/]",
            )
        console.print(table)
    return 1 if failed else 0
