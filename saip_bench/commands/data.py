"""``saip-bench data synth`` (write the synthetic world) and ``saip-bench data verify`` (check a root)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="generate the synthetic world or verify a dataset")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="write all 12 datasets of the synthetic human world")
    synth.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per dataset)")
    synth.add_argument("--preset", default="tiny", help="tiny | default | large | gpu_check")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--datasets", nargs="*", default=None, help="only these datasets (default: all)")
    synth.add_argument("--force", action="store_true", help="regenerate even if the cache key matches")
    synth.add_argument("--no-contact-sheets", action="store_true")
    synth.set_defaults(func=run_synth)

    verify = sub.add_parser("verify", help="check a dataset root against its card; exit 0 if usable")
    verify.add_argument("name", help="dataset name (see `saip-bench list datasets`)")
    verify.add_argument("--root", type=Path, default=None, help="dataset root (default $SAIP_DATA/<name>)")
    verify.add_argument("--version", default=None, help="force a version instead of detecting it")
    verify.add_argument("--full", action="store_true", help="open every file, not a sample")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=run_verify)


def run_synth(args: argparse.Namespace) -> int:
    from saip_bench.data.synth import generate_world

    generate_world(
        args.out, preset=args.preset, seed=args.seed, datasets=args.datasets, force=args.force,
        contact_sheets=not args.no_contact_sheets,
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from saip_bench.data.readers import resolve_root, verify_dataset

    root = resolve_root(args.name, args.root)
    report = verify_dataset(args.name, root, version=args.version, full=args.full)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        report.print()
    return 0 if report.usable else 1
