"""``benchmarks/jpeg_draft.py`` with one decode per case (about two seconds): the figures docs/performance.md
cites come from this script, so it must keep running and keep its promises (a draft never below the
target, no draft where none fits, pixels close to the full decode)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "jpeg_draft.py"


def test_jpeg_draft_benchmark_runs_and_reports_every_case(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = json.loads(out.read_text())
    assert len(rows) >= 4 and "| image |" in proc.stdout
    for row in rows:
        (width, height), (target_w, target_h) = row["stored"], row["target"]
        reduction = row["reduction"]
        assert reduction in (1, 2, 4, 8), row
        # the drafted image still covers the target; a larger reduction would not
        assert width / reduction >= target_w and height / reduction >= target_h, row
        if reduction < 8:
            assert width / (2 * reduction) < target_w or height / (2 * reduction) < target_h, row
        assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("full_images_per_cpu_s",
                                                                   "draft_images_per_cpu_s")), row
        assert row["mean_abs_diff"] == 0.0 if reduction == 1 else 0.0 < row["mean_abs_diff"] < 4.0, row
    assert {row["reduction"] for row in rows} >= {1, 2, 4}  # the cases cover no draft and real drafts
