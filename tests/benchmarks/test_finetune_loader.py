"""``benchmarks/finetune_loader.py --quick`` on two cheap datasets of the shared tiny world, in this process.

Why: docs/performance.md quotes the script's worker costs and worker counts against the H200's step rate;
the test keeps it running against the tasks' current fits, and checks that what it times is what the fit
hands its DataLoader (bytes of the collated image + index), that its verdict follows the stated formula
from the H200 JSON, and that it leaves the patched loader and the thread settings as it found them."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from saip_bench.tasks import common

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "finetune_loader.py"
H200 = REPO / "benchmarks" / "results" / "gpu" / "gpu_check_h200.json"
FIELDS = ("load_ms", "collate_ms", "worker_ms", "bytes_per_sample", "samples", "h200_compute_rate",
          "workers_needed")


def load_script():
    """The script as a module (registered first: its dataclass looks its module up while being built)."""
    if "finetune_loader" in sys.modules:
        return sys.modules["finetune_loader"]
    spec = importlib.util.spec_from_file_location("finetune_loader", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["finetune_loader"] = module
    spec.loader.exec_module(module)
    return module


def test_quick_rows_follow_the_fit_and_the_formula(synth_world, tmp_path, capsys):
    script = load_script()
    original, threads = common.worker_batches, torch.get_num_threads()
    out = tmp_path / "rows.json"
    assert script.main(["--quick", "--world", str(synth_world), "--datasets", "market1501", "pa100k",
                        "--json", str(out)]) == 0
    assert common.worker_batches is original and torch.get_num_threads() == threads

    report = json.loads(out.read_text())
    assert report["quick"] is True and report["formula"] == script.FORMULA
    h200 = {r["case"]: r for r in json.loads(H200.read_text())["finetune"]}
    rows = report["rows"]
    assert [(r["case"], r["way"]) for r in rows] == [("reid/market1501", ""), ("attributes/pa100k", "")]
    for row in rows:
        for field in FIELDS:
            assert isinstance(row[field], (int, float)) and math.isfinite(row[field]) and row[field] > 0, (
                field, row)
        assert row["samples"] == 4 and row["batch"] <= 4 and row["worker_ms_passes"] == [row["worker_ms"]]
        assert row["worker_ms"] == pytest.approx(row["load_ms"] + row["collate_ms"], abs=2e-3)
        # the collated batch is the fit's: one 3 x H x W image (uint8 or float32) and its int64 index
        height, width = map(int, row["input"].split("x"))
        assert 3 * height * width + 8 <= row["bytes_per_sample"] <= 4 * 3 * height * width + 8, row
        source = h200[row["case"]]
        rate = source["train_images_per_s"] / (1 - source["data_wait_share"])
        assert row["h200_compute_rate"] == pytest.approx(rate, abs=0.05)
        assert row["workers_needed"] == math.ceil(rate * row["worker_ms"] / 1e3 / 0.9)
        assert row["fits_in_14"] is (row["workers_needed"] <= 14)
    printed = capsys.readouterr().out
    assert "| market1501 | 128x64 | 4 (H200: 64) |" in printed and "| pa100k |" in printed


def test_unknown_dataset_is_refused():
    with pytest.raises(SystemExit):
        load_script().parse(["--datasets", "market"])


def test_verdict_is_the_stated_formula():
    """The H200's pose row (136.2 img/s at 96.3 % wait: 3,681 img/s computing) at 5 ms a worker sample:
    ceil(3681 * 0.005 / 0.9) = 21 workers, over 14; the bare bound 0.9 * R * t gives 17."""
    row = {"worker_ms": 5.0}
    load_script().verdict(row, {"train_images_per_s": 136.2, "data_wait_share": 0.963, "batch": 512})
    assert row["h200_compute_rate"] == pytest.approx(3681.1, abs=0.05)
    assert (row["workers_needed"], row["workers_bare_bound"], row["fits_in_14"]) == (21, 17, False)
    row = {"worker_ms": 1.0}
    load_script().verdict(row, {"train_images_per_s": 136.2, "data_wait_share": 0.963, "batch": 512})
    assert (row["workers_needed"], row["fits_in_14"]) == (5, True)
