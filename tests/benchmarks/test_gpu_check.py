"""``benchmarks/gpu_check.py --device cpu --quick`` as CI runs it, on one method and two datasets.

Why: the script is the one prepared check a GPU machine gets; a CPU run of the same code path (CUDA tests
section, the trainer's loop, ``Task.run`` with the guard armed, the report) keeps it from rotting between
GPU sessions. Restricted to stay near half a minute on 2 CPU cores (plus the shared tiny world)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
DATASETS = {"reid/market1501", "attributes/peta"}


def finite_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def assert_per_step(row: dict) -> None:
    """One figure per timed step; waits within their steps; the late-half share a fraction."""
    assert len(row["step_ms"]) == len(row["step_wait_ms"]) == row["timed_steps"], row
    assert all(0 <= w <= t for w, t in zip(row["step_wait_ms"], row["step_ms"], strict=True)), row
    assert 0.0 <= row["data_wait_share_second_half"] <= 1.0, row


def test_gpu_check_quick_on_cpu(synth_world, tmp_path):
    assert (synth_world / "pretrain").is_dir()
    out = tmp_path / "gpu_check"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--methods", "supervised_ids",
               "--no-reference", "--datasets", "market1501", "peta", "--world", str(synth_world),
               "--out", str(out), "--sections", "tests,pretrain,finetune"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["quick"] is True
    tests = report["tests"]
    assert tests["status"] in ("passed", "skipped"), tests.get("log_tail")
    if not torch.cuda.is_available():
        assert tests["status"] == "skipped"  # every CUDA test skipped: nothing was checked, and it says so

    pretrain = report["pretrain"]
    assert [r["case"] for r in pretrain] == ["supervised_ids"]
    for row in pretrain:
        assert row["status"] == "ok", row
        assert finite_positive(row["images_per_s"]) and finite_positive(row["ms_per_step"]), row
        assert 0.0 <= row["data_wait_share"] <= 1.0, row
        assert row["timed_steps"] >= 1 and math.isfinite(row["final_loss"]), row
        assert_per_step(row)

    finetune = report["finetune"]
    assert {r["case"] for r in finetune} == DATASETS
    for row in finetune:
        assert row["status"] == "ok", row
        assert row["protocol"] == "finetune" and row["timed_steps"] >= 1, row
        assert finite_positive(row["train_images_per_s"]), row
        assert 0.0 <= row["data_wait_share"] <= 1.0, row
        assert row["eval_s"] >= 0 and row["predict_s"] >= 0 and row["score_s"] >= 0, row
        assert math.isfinite(row["main_score"]), row
        assert_per_step(row)

    table = (out / "gpu_check.md").read_text().splitlines()
    for row in pretrain + finetune:
        lines = [line for line in table if line.startswith(f"| {row['case']} |")]
        assert len(lines) == 1 and lines[0].endswith("| ok |"), (row["case"], table)


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_gpu_check_compile_scopes_and_compiled_rows(synth_world, tmp_path, monkeypatch):
    """``--compile`` (blocks) with ``--compiled-rows`` in this process, on dynamo's eager backend (fast,
    exact): the plain pretraining row compiles its blocks, the compiled row its whole step, the fine-tune
    its blocks; dynamo compiled frames; the FLOPs are still counted (in eager mode); an asked warm-up of 0
    became 1 (the first step compiles); so one call measures a method with and without its whole step
    compiled."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("SAIP_COMPILE_BACKEND", "eager")
    script = _load_script("gpu_check_compile")
    out = tmp_path / "gpu_check"
    before = counters["frames"]["ok"]
    assert script.main(["--device", "cpu", "--quick", "--compile", "--methods", "supervised_ids",
                        "--compiled-rows", "supervised_ids", "--no-reference", "--datasets", "market1501",
                        "--world", str(synth_world), "--out", str(out), "--sections", "pretrain,finetune",
                        "--warmup", "0", "--warmup-ft", "0"]) == 0
    assert counters["frames"]["ok"] > before  # something was compiled
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["args"]["compile"] == "blocks"
    assert (report["args"]["warmup"], report["args"]["warmup_ft"]) == (1, 1)
    rows = report["pretrain"] + report["finetune"]
    assert [(r["case"], r["status"], r["compile"]) for r in rows] == [
        ("supervised_ids", "ok", "blocks"), ("supervised_ids (compile step)", "ok", "step"),
        ("reid/market1501", "ok", "blocks")], rows
    assert rows[1]["compile_mode"] == "default" and rows[1]["timed_steps"] >= 1
    # the compiled row compiled in its warm-up step only, so every timed step counts
    assert (rows[1]["compiling_steps"], rows[1]["timed_steps_compiling"]) == ([1], 0)
    assert rows[1]["graphs"] >= 1
    assert "graphs" not in rows[0]
    assert all(finite_positive(r["step_tflop"]) for r in report["pretrain"]), report["pretrain"]
    table = (out / "gpu_check.md").read_text()
    assert "torch.compile (blocks)" in table.splitlines()[0] and "| supervised_ids (compile step) |" in table
    assert f"supervised_ids (compile step): {rows[1]['graphs']} graph(s) compiled; 0 of" in table


def test_steps_that_compiled_are_read_from_the_trainers_graph_count():
    script = _load_script("gpu_check_compiling")
    history = [{"step": 1.0, "compile/graphs": 1.0}, {"step": 2.0, "compile/graphs": 1.0},
               {"step": 3.0, "compile/graphs": 3.0}, {"step": 4.0, "compile/graphs": 3.0}, {"step": 5.0}]
    assert script.compiling_steps(history) == {1, 3}
    assert script.compiling_steps([{"step": 1.0}, {"step": 2.0}]) == set()  # an eager run


def test_a_compiled_rows_mode_holds_for_its_row_only(monkeypatch):
    from saip_bench.devices import COMPILE_MODE_ENV

    script = _load_script("gpu_check_modes")
    assert [script.compiled_row(s) for s in ("saip", "saip:reduce-overhead")] == [
        ("saip", "default"), ("saip", "reduce-overhead")]
    assert script.case_label("saip", None, None) == "saip"
    label = script.case_label("saip", 256, "reduce-overhead")
    assert label == "saip (batch 256, compile step, reduce-overhead)"
    monkeypatch.setenv(COMPILE_MODE_ENV, "max-autotune")
    with script.compile_mode("reduce-overhead"):
        assert os.environ[COMPILE_MODE_ENV] == "reduce-overhead"
    with script.compile_mode("default"):
        assert COMPILE_MODE_ENV not in os.environ
    assert os.environ[COMPILE_MODE_ENV] == "max-autotune"


@pytest.mark.parametrize("spec", ["sapi", "saip:fast"])
def test_a_bad_compiled_row_is_a_usage_error_before_any_work(spec, tmp_path, capsys):
    script = _load_script("gpu_check_bad_row")
    with pytest.raises(SystemExit) as stop:
        script.main(["--device", "cpu", "--quick", "--compiled-rows", spec, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"--compiled-rows {spec}: expected METHOD[:MODE]" in err
    assert "reduce-overhead" in err and "supervised_ids" in err and not (tmp_path / "out").exists()
