"""``saip-bench cache``: where the cache is, what it holds, and clearing it.

Why a command: the cache moved from ``./.cache`` to the user cache folder (``saip_bench.cachedir``); a user
must be able to find it, see what takes the space, and empty it without knowing the platform's rules.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from saip_bench.cachedir import default_cache_dir
from saip_bench.errors import UserError


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    root: Path = args.cache_dir or default_cache_dir()
    if args.action == "path":
        print(root)
        return 0
    if args.action == "info":
        print(f"cache: {root}")
        if not root.is_dir():
            print("  (empty: nothing cached yet)")
            return 0
        for entry in sorted(root.iterdir()):
            print(f"  {entry.name:<14} {_human(_size(entry)):>10}")
        return 0
    # clear
    if not root.exists():
        print(f"cache {root} is already empty")
        return 0
    if not args.yes:
        raise UserError(f"this deletes {root} ({_human(_size(root))}); run again with --yes")
    if not root.is_dir() or (root / ".git").exists():
        raise UserError(f"{root} does not look like a saip-bench cache; delete it yourself if you mean to")
    shutil.rmtree(root)
    print(f"deleted {root}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache", help="where the cache (world, checkpoints, features, pool indexes) is; its sizes; clear it",
        description="The cache is $SAIP_CACHE_DIR, else the user cache folder (~/.cache/saip-bench on "
        "Linux); "
        "--cache-dir names another.")
    parser.add_argument("action", choices=("path", "info", "clear"), nargs="?", default="info")
    parser.add_argument("--cache-dir", type=Path, default=None, help="another cache folder")
    parser.add_argument("--yes", action="store_true", help="clear: really delete")
    parser.set_defaults(func=run)
