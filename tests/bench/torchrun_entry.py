"""``run_bench`` on the fake world, as a script for ``torchrun`` (tests/bench/test_schedule.py).

Usage: ``torchrun ... tests/bench/torchrun_entry.py TMP [SLOW_DATASET [FAILING_DATASET]]``: the unit of
SLOW_DATASET (any seed) writes this rank's pid to ``TMP/slow.pid`` and sleeps, so a test can kill the rank
mid-unit; the units of FAILING_DATASET raise. The exit code is the one ``saip-bench bench`` gives.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from saip_bench.bench.runner import BenchConfig, BenchHooks  # noqa: E402
from saip_bench.commands.bench import execute  # noqa: E402
from tests.bench.fakes import (  # noqa: E402
    FAKE_SPECS,
    FakePretrainer,
    FakeTask,
    fake_loader,
    fake_read,
    fake_world,
)
from tests.bench.test_runner import PRESET  # noqa: E402


class SlowTask(FakeTask):
    slow: str | None = None
    tmp: Path = Path(".")

    def run(self, ctx):
        if ctx.spec.dataset == SlowTask.slow:
            import os

            (SlowTask.tmp / "slow.pid").write_text(str(os.getpid()))
            time.sleep(600)
        return super().run(ctx)


def main() -> int:
    torch.set_num_threads(1)
    tmp = Path(sys.argv[1])
    SlowTask.tmp, SlowTask.slow = tmp, (sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None)
    FakeTask.fail_on = set(sys.argv[3:4])
    hooks = BenchHooks(specs=FAKE_SPECS, get_task=lambda name: SlowTask(), read_dataset=fake_read,
                       generate_world=fake_world, pretrainer=FakePretrainer(), backbone_loader=fake_loader,
                       method_unsupported=lambda m, b: None)
    config = BenchConfig(preset=PRESET, run_dir=tmp / "run", cache_dir=tmp / "cache", show_progress=False)
    ok = execute(config, argparse.Namespace(pretrain_only=False, workers=1), hooks)
    # Exit as `saip-bench bench` does, with no closing barrier: after the shared phase the ranks talk through
    # files, and rank 0 exits non-zero only after the others have left (RankBoard.wait_for_leavers). A
    # barrier here held rank 1 until rank 0 was done, so both exited at once and torchrun sent SIGTERM to
    # rank 1 while its interpreter was still ending (test_schedule's failed-units test, 3 runs in 6).
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
