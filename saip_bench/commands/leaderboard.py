"""``saip-bench leaderboard``: build the boards (Markdown, CSV, HTML, plots) from result records."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "leaderboard",
        help="build leaderboards from result records (Markdown, CSV, HTML, radar/Pareto plots)",
        description="Boards are regenerated from records only; the same records give byte-identical files.",
    )
    parser.add_argument("records", nargs="+", type=Path, help="run folders, records/ folders or record files")
    parser.add_argument("--out", type=Path, default=Path("leaderboards") / "generated", help="output folder")
    parser.add_argument(
        "--compare",
        default=None,
        choices=("paper",),
        help="put the paper's published numbers (leaderboards/paper/) beside ours",
    )
    parser.add_argument(
        "--formats", nargs="+", default=["md", "csv", "tex", "html", "png"],
        choices=("md", "csv", "tex", "html", "png"),
    )
    parser.add_argument("--skip-invalid", action="store_true", help="skip files that are not valid records")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from saip_bench.bench.store import load_records
    from saip_bench.errors import UserError
    from saip_bench.leaderboard import write_boards
    from saip_bench.utils import console

    records = load_records(args.records, skip_invalid=args.skip_invalid)
    if not records:
        raise UserError(f"no records found under {', '.join(map(str, args.records))}")
    written = write_boards(records, args.out, compare=args.compare, formats=args.formats)
    console.print(f"{len(records)} record(s) -> {len(written)} file(s) under {args.out}")
    return 0
