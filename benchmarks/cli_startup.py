"""Wall time of `saip-bench --help` (issue 25: "under 1.5 s"), and which heavy modules it imports.

Each run is a fresh interpreter: ``python -c "from saip_bench.cli import main; main(['--help'])"``, so the
figure is interpreter start + package import + building every sub-command's parser. ``--code DIR`` times
another checkout of the package instead (for "before": ``git archive REV saip_bench | tar -x -C DIR``).

    .venv/bin/python benchmarks/cli_startup.py --runs 7
    .venv/bin/python benchmarks/cli_startup.py --runs 7 --code /tmp/cli_before
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "timm", "scipy", "torchvision", "pycocotools", "mmpose", "open_clip")
PROBE = """
import sys
if {code!r}:  # another checkout: ahead of this one's editable-install finder
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path.insert(0, {code!r})
from saip_bench.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
import saip_bench
print("HEAVY " + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
print("FROM " + saip_bench.__file__, file=sys.stderr)
"""


def run_once(code_dir: Path | None) -> tuple[float, list[str], str]:
    code = PROBE.format(heavy=HEAVY, code=str(code_dir) if code_dir is not None else "")
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp")
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        sys.exit(f"cli_startup: --help failed:\n{done.stderr[-2000:]}")
    lines = done.stderr.splitlines()
    heavy = next(line for line in lines if line.startswith("HEAVY "))[len("HEAVY "):]
    package = next(line for line in lines if line.startswith("FROM "))[len("FROM "):]
    return wall, [name for name in heavy.split(",") if name], package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--code", type=Path, default=None, help="another checkout of the package (before)")
    args = parser.parse_args()
    run_once(args.code)  # warm the page cache
    walls: list[float] = []
    heavy: list[str] = []
    package = ""
    for _ in range(args.runs):
        wall, heavy, package = run_once(args.code)
        walls.append(wall)
    print(json.dumps({"package": package, "runs": args.runs,
                      "median_s": round(statistics.median(walls), 2), "min_s": round(min(walls), 2),
                      "max_s": round(max(walls), 2), "heavy_modules_imported": heavy}))


if __name__ == "__main__":
    main()
