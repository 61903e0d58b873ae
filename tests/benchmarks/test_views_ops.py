"""``benchmarks/views_ops.py`` (seconds): docs/performance.md cites its operator, read and copy counts of
one ``make_saip_views`` call, so it must keep running and count what the view builder asks for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "views_ops.py"
LINE = re.compile(r"batch 8: (\d+) top-level operators, (\d+) of them not pure views .*?, "
                  r"(\d+) tensor reads, (\d+) host-to-device copies")


def test_views_ops_counts_operators_reads_and_copies():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--batch", "8"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    match = LINE.search(proc.stdout)
    assert match, proc.stdout
    operators, launches, reads, copies = map(int, match.groups())
    assert 0 < launches < operators
    assert reads == 0  # every random draw is made on the host (test_views holds make_saip_views to it)
    # at least one copy per crop call (2 sizes + the canvas), the masks and the paste corners
    assert copies >= 5
