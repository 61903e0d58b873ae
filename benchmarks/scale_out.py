"""Wall time of a bench preset at 1 process and under ``torchrun`` with N processes (CPU, gloo here).

Each launch runs the same command a user types (``run_bench.py --preset P`` and
``torchrun --standalone --nproc_per_node N run_bench.py --preset P``) into a fresh run folder and a fresh
checkpoint cache, on one synthetic world generated beforehand with ``saip-bench data synth`` (world
generation is not timed), with the leaderboard off. Prints one line per launch and the speed-up.

    .venv/bin/python benchmarks/scale_out.py --preset smoke --procs 2

On a machine with fewer cores than processes the processes share cores; the figure then measures the
scheduling (no unit twice, shared pretraining), not the hardware's parallel speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"scale_out: {' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process (both launches)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="scale_out_") as tmp:
        work = Path(tmp)
        common = ["run_bench.py", "--preset", args.preset, "--no-leaderboard", "--no-progress"]
        # one world for both launches, generated first (not timed) and named with --world
        from saip_bench.bench.presets import load_bench_preset

        preset = load_bench_preset(args.preset)
        world = work / "world"
        launch([sys.executable, "-m", "saip_bench.cli", "data", "synth", "--out", str(world), "--preset",
                preset.synth_preset, "--seed", str(preset.synth_seed), "--no-contact-sheets"], env)
        results = {}
        for procs in (1, args.procs):
            tag = f"p{procs}"
            own = ["--world", str(world), "--out", str(work / tag / "run"),
                   "--cache-dir", str(work / tag)]
            if procs == 1:
                command = [sys.executable, *common, *own, "--workers", "1"]
            else:
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(procs), *common, *own]
            wall, _ = launch(command, env)
            records = len(list((work / tag / "run" / "records").glob("*.json")))
            results[tag] = {"procs": procs, "wall_s": round(wall, 1), "records": records}
            print(f"{args.preset}: {procs} process(es): {wall:.1f} s, {records} records", flush=True)
        speedup = results["p1"]["wall_s"] / results[f"p{args.procs}"]["wall_s"]
        print(f"speed-up {args.procs} vs 1 process: {speedup:.2f}x (cores here: {os.cpu_count()})")
        if args.json:
            args.json.write_text(json.dumps({"preset": args.preset, "cores": os.cpu_count(),
                                             "threads_per_process": args.threads, **results,
                                             "speedup": round(speedup, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
