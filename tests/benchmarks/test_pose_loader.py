"""``benchmarks/pose_loader.py`` on four photos (a few seconds): the loader figures docs/performance.md
cites come from this script, so it must keep running and its byte counts must be what the two ways
really collate (the new sample: uint8 crop + keypoints; the old: float crop + float heatmaps)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "pose_loader.py"


def test_pose_loader_benchmark_reports_both_layouts(tmp_path):
    out = tmp_path / "rows.json"
    tiny = ["--samples", "4", "--render-batch", "8", "--repeats", "1", "--loader-batch", "4",
            "--loader-batches", "1", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(SCRIPT), *tiny], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = json.loads(out.read_text())
    assert [(r["layout"], r["keypoints"], r["codec"]) for r in rows] == [
        ("COCO", 17, "UDPHeatmap"), ("COCO-WholeBody", 133, "MSRAHeatmap")]
    assert "| COCO-WholeBody | 133 | MSRAHeatmap | new |" in proc.stdout
    assert "| COCO | 17 | UDPHeatmap | device crops |" in proc.stdout
    crop = 3 * 256 * 192
    for r in rows:
        k = r["keypoints"]
        assert r["old_bytes"] == 4 * crop + 4 * k * 64 * 48 + 4 * k  # float crop, heatmaps, weights
        assert r["new_bytes"] == crop + 4 * 2 * k + 4 * k  # uint8 crop, (x, y), visibility
        assert r["new_batch_mb"] == r["new_bytes"] * 512 / 1e6 < r["old_batch_mb"] / 2.5
        # device crops: the JPEG file (~110 KB here), a 2x3 float64 matrix, a flag, the keypoints
        assert 3 * 4 * k + 48 + 1 + 20_000 < r["device_bytes"]
        timings = [v for key, v in r.items() if key.endswith(("_ms", "w"))]
        assert len(timings) == 14 and all(math.isfinite(v) and v > 0 for v in timings), r
        assert r["device_ms"] < r["decode_ms"] + r["new_ms"]  # the worker no longer decodes or warps
