"""The one prepared GPU check: CUDA tests, pretraining step speed of every method, and every dataset's
fine-tune protocol (capped steps + full evaluation), in one process tree, one JSON, one Markdown table.

    python benchmarks/gpu_check.py --out gpu_check            # on a CUDA machine (about 6 minutes, H200)
    python benchmarks/gpu_check.py --device cpu --quick       # the same script on CPU (CI)

Sections (each case is independent: a failure is recorded with its traceback and the rest goes on):
  tests     ``pytest -m cuda tests/test_cuda.py`` (every task's fit + predict, every method's step, on CUDA)
  pretrain  the trainer's real loop (DataLoader workers, pinned memory, bf16 autocast) on a synthetic pool
            at the preset's per-GPU micro-batch: images/s and data-wait share (median over the timed steps
            after ``--warmup``), model FLOPs of one step (torch.utils.flop_counter) -> MFU against the
            datasheet dense peak, peak CUDA memory; plus ``reference_saip.py`` (the authors'-style SAIP
            step, fp32) and saip-bench's SAIP step on the same random inputs, for the speed-up.
  finetune  each of the 12 datasets' ``finetune`` protocol through ``Task.run`` with the spec's batch and
            input size, ``--ft-steps`` optimiser steps, then its full evaluation (predict + score) on the
            world's evaluation split: train images/s and data-wait share after ``--ft-warmup`` steps,
            eval seconds, peak memory.
Timing: warm-up steps excluded, CUDA synchronised at every timed point (the loops read their losses at
log points; the step ends are taken after the host has the loss), medians or sums over the timed steps.
``--quick`` (CPU, CI): the ``tiny`` world, 2 steps, batch 4, each spec's CPU-sized input size.
``--compile`` compiles the backbone's blocks everywhere; ``--compile step`` each pretraining method's whole
step (fine-tuning still the blocks). ``--compiled-rows saip saip:reduce-overhead`` instead adds rows after
the eager ones that time those methods with the whole step compiled (in that torch.compile mode), so one
call measures eager and compiled side by side. A compilation takes minutes on a GPU host: each such row
costs that once, in its untimed warm-up, unless the step recompiles (a new size or a guarded value). The
trainer logs its graph count per step (``compile/graphs``); timed steps that compiled are left out of
ms/step and listed under the table (inductor recompiled SAIP's step for its rescaled view sizes on a CPU,
until ``devices.step_compile_options``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import saip_bench  # noqa: E402, F401  (torchvision shim before timm)

PRETRAIN_METHODS = ("saip", "supervised_ids", "mae", "dino", "hap", "solider", "mocov3")
CPU_SIZED_PROTOCOLS = ("finetune_cpu", "frozen", "linear")


# ------------------------------------------------------------------------------------------- helpers
class Clock:
    """Seconds left of the whole check; sections skip cases that would start after the budget."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def window(ends: list[float], waits: list[float], warmup: int) -> tuple[float, float, int]:
    """(seconds, data-wait seconds, steps) of the steps after ``warmup`` (at least the last one)."""
    first = first_timed(ends, warmup)
    start = ends[first - 1] if first > 0 else 0.0
    steps = len(ends) - first
    return ends[-1] - start, sum(waits[first:]), steps


def first_timed(ends: list[float], warmup: int) -> int:
    """Index of the first timed step: after ``warmup`` (at least 1) steps, leaving at least the last one."""
    return min(max(warmup, 1), len(ends) - 1) if len(ends) > 1 else 0


def timed_steps(ends: list[float], waits: list[float], warmup: int) -> tuple[list[float], list[float]]:
    """Seconds and data-wait seconds of each step after ``warmup``, from the loop's step end times."""
    first = first_timed(ends, warmup)
    starts = [ends[i - 1] if i > 0 else 0.0 for i in range(first, len(ends))]
    step_s = [end - start for start, end in zip(starts, ends[first:], strict=True)]
    return step_s, list(waits[first:len(ends)])


def per_step(step_s: list[float], wait_s: list[float]) -> dict[str, Any]:
    """Each timed step's milliseconds and data wait, and the wait share of the window's second half.

    Why: a wait share over a short window mixes the loader's pipeline filling up (waits that shrink step by
    step) with a loader that cannot keep up (waits that stay); the per-step lists tell the two apart."""
    half = len(step_s) // 2
    late_s = sum(step_s[half:])
    return {"step_ms": [round(1000 * t, 2) for t in step_s],
            "step_wait_ms": [round(1000 * w, 2) for w in wait_s],
            "data_wait_share_second_half": round(sum(wait_s[half:]) / late_s, 4) if late_s > 0 else None}


def error_row(row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    row["status"] = "failed"
    row["error"] = f"{type(exc).__name__}: {exc}"[:400]
    row["traceback"] = traceback.format_exc()[-3000:]
    print(f"  FAILED {row.get('case')}: {row['error']}", file=sys.stderr, flush=True)
    return row


# -------------------------------------------------------------------------------------------- tests
def run_tests(args: argparse.Namespace, clock: Clock) -> dict[str, Any]:
    """``pytest -m cuda`` in a child process (its own CUDA context), with a time limit."""
    limit = max(30.0, min(args.tests_timeout, clock.left() - 60))
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfE",
               str(REPO / "tests" / "test_cuda.py")]
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit)
        tail = (proc.stdout + proc.stderr)[-4000:]
        status = "failed" if proc.returncode not in (0, 5) else "passed"
    except subprocess.TimeoutExpired as exc:
        tail = ((exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""))[-4000:]
        status = "timeout"
    summary = next((line for line in reversed(tail.splitlines()) if " in " in line and
                    any(w in line for w in ("passed", "failed", "skipped", "error"))), "")
    if status == "passed" and " passed" not in summary:
        status = "skipped"  # no CUDA here: every test skipped, nothing was checked
    return {"case": "pytest -m cuda", "status": status, "summary": summary.strip("= "),
            "seconds": round(time.perf_counter() - started, 1), "log_tail": tail}


# ----------------------------------------------------------------------------------------- pretrain
def pretrain_row(method: str, args: argparse.Namespace, pool: Path, out: Path) -> dict[str, Any]:
    """One method through the trainer's loop on ``pool``; timing from its per-step logs."""
    import torch
    from pretrain_step import peak_tflops_for
    from torch.utils.flop_counter import FlopCounterMode

    from saip_bench.devices import compile_scope
    from saip_bench.pretrain.api import run_training
    from saip_bench.pretrain.data import images_to_float
    from saip_bench.utils import autocast

    steps = args.warmup + args.steps
    overrides = {"steps": steps, "epochs": None, "warmup_epochs": None, "warmup_steps": 0,
                 "accum_steps": 1, "checkpoint_every": 10**9, "log_every": 1,
                 "num_workers": args.workers, "amp": not args.fp32, "compile": args.compile or False}
    if args.batch:
        overrides["batch_size"] = args.batch
    reset_peak(args.device)
    result, trainer = run_training(method, args.backbone, args.preset, pool, out / method, seed=0,
                                   device=args.device, progress=False, overrides=overrides)
    memory = peak_mib(args.device)
    history = result.history
    timed = history[args.warmup:] or history[-1:]
    batch = trainer.config.batch_size
    step_s = [batch / h["images_per_s"] for h in timed]
    wait_s = [h.get("time/data_wait_s", 0.0) for h in timed]
    compiling = compiling_steps(history)  # a compiled step's steps that compiled a graph: never timed
    steady = [i for i, h in enumerate(timed) if int(h["step"]) not in compiling]
    kept = steady or list(range(len(timed)))
    median = statistics.median(step_s[i] for i in kept)
    # Model FLOPs of one micro-step (views + forward + backward), counted once after the timed steps.
    trainer.step = 0  # the sampler starts where training stopped: rewind for one more batch
    batch_data = images_to_float(next(iter(trainer._batches())), trainer.device)
    batch_data["step_seed"] = torch.tensor(7)
    method_obj = trainer.method
    with torch.no_grad():
        views = method_obj.make_views(batch_data, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    # forward and backward, counted in eager mode (the same FLOPs; a compiled graph hides from the counter)
    with counter, torch.compiler.set_stance("force_eager"):
        with autocast(trainer.device, trainer.amp):
            out_terms = method_obj(views)
        out_terms["loss"].float().backward()
    method_obj.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    peak = peak_tflops_for(args.device, trainer.amp)  # the datasheet's dense peak (pretrain_step.py)
    achieved = flops / median / 1e12
    row = {
        "case": method, "status": "ok", "backbone": args.backbone, "preset": args.preset,
        "batch": batch, "precision": "bf16" if trainer.amp else "fp32", "workers": args.workers,
        "compile": compile_scope(trainer.config.compile) or False,
        "timed_steps": len(timed), "ms_per_step": round(1e3 * median, 2),
        "images_per_s": round(batch / median, 1),
        "data_wait_share": round(sum(wait_s[i] for i in kept) / sum(step_s[i] for i in kept), 4),
        "step_tflop": round(flops / 1e12, 4), "achieved_tflops": round(achieved, 2),
        "mfu": round(achieved / peak, 4) if peak else None, "peak_mib": memory,
        "final_loss": round(float(result.last.get("loss", float("nan"))), 4),
        **per_step(step_s, wait_s),
    }
    if trainer.compiled_step:
        row["graphs"] = int(history[-1].get("compile/graphs", 0))
        row["compiling_steps"] = sorted(compiling)
        row["timed_steps_compiling"] = len(step_s) - len(steady)
        if not steady:  # every timed step compiled: its time is the compiler's, not the step's
            row["status"] = f"every timed step compiled ({row['graphs']} graphs)"
            for key in ("ms_per_step", "images_per_s", "data_wait_share", "achieved_tflops", "mfu"):
                row[key] = None
    return row


def compiling_steps(history: list[dict[str, Any]]) -> set[int]:
    """The steps of a compiled-step run whose ``compile/graphs`` (trainer log) grew: they compiled."""
    steps, before = set(), 0.0
    for entry in history:
        graphs = entry.get("compile/graphs")
        if graphs is not None and graphs > before:
            steps.add(int(entry["step"]))
            before = graphs
    return steps


def reference_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The authors'-style step vs saip-bench's SAIP step on the same random inputs (pretrain_step.py)."""
    from pretrain_step import measure

    batch = args.batch or 64
    rows = []
    for name, amp in (("reference", False), ("saip", not args.fp32)):
        reset_peak(args.device)
        # both eager: the same inputs for the speed-up; the compiled step is timed in the rows above
        row = measure(name, args.preset, args.backbone, batch, max(2, args.steps // 2), max(1, args.warmup),
                      amp, args.device, None)
        row["case"] = f"{name} (random inputs)"
        row["status"] = "ok"
        rows.append(row)
    return rows


def compiled_row(spec: str) -> tuple[str, str]:
    """``METHOD[:MODE]`` of ``--compiled-rows`` -> (method, torch.compile mode; ``default``: torch's)."""
    method, _, mode = spec.partition(":")
    return method, mode or "default"


def case_label(method: str, batch: int | None, mode: str | None) -> str:
    """A pretraining row's name: the method, then what differs from the run's eager rows."""
    notes = ([f"batch {batch}"] if batch is not None else []) + (
        [] if mode is None else ["compile step" + ("" if mode == "default" else f", {mode}")])
    return f"{method} ({', '.join(notes)})" if notes else method


@contextlib.contextmanager
def compile_mode(mode: str | None) -> Iterator[None]:
    """A compiled row's ``$SAIP_COMPILE_MODE`` (``devices.compile_step`` reads it when the trainer starts)
    on a fresh dynamo cache, so each row compiles and times its own graphs; the caller's value comes back
    after."""
    if mode is None:
        yield
        return
    import torch

    from saip_bench.devices import COMPILE_MODE_ENV

    saved = os.environ.get(COMPILE_MODE_ENV)
    torch._dynamo.reset()
    if mode == "default":
        os.environ.pop(COMPILE_MODE_ENV, None)
    else:
        os.environ[COMPILE_MODE_ENV] = mode
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(COMPILE_MODE_ENV, None)
        else:
            os.environ[COMPILE_MODE_ENV] = saved
        torch._dynamo.reset()


def run_pretrain(
    args: argparse.Namespace, pool: Path, out: Path, clock: Clock, rows: list, save: Any
) -> None:
    methods = args.methods or list(PRETRAIN_METHODS)
    cases = ([(m, args.batch, None) for m in methods] + [("saip", b, None) for b in args.saip_batches]
             + [(m, args.batch, mode) for m, mode in map(compiled_row, args.compiled_rows)])
    for method, batch, mode in cases:
        label = case_label(method, batch if batch != args.batch else None, mode)
        if clock.left() < args.reserve_s:
            rows.append({"case": label, "status": "skipped (time budget)"})
            continue
        print(f"pretrain {label} ({clock.elapsed():.0f} s)", file=sys.stderr, flush=True)
        row = {"case": label}
        row_args = argparse.Namespace(**{**vars(args), "batch": batch})
        if mode is not None:  # this row alone compiles its whole step, after a clean dynamo cache
            row_args.compile = "step"
            row_args.warmup = max(1, args.warmup)
        try:
            with compile_mode(mode):
                row = pretrain_row(method, row_args, pool, out / re.sub(r"[^\w.-]+", "_", label).strip("_"))
            row["case"] = label
            if mode is not None:
                row["compile_mode"] = mode
        except Exception as exc:
            error_row(row, exc)
        rows.append(row)
        save()
    if args.reference and clock.left() > args.reserve_s:
        print(f"pretrain reference ({clock.elapsed():.0f} s)", file=sys.stderr, flush=True)
        try:
            rows.extend(reference_rows(args))
        except Exception as exc:
            rows.append(error_row({"case": "reference"}, exc))
        save()


# ----------------------------------------------------------------------------------------- finetune
def finetune_spec(spec: Any, args: argparse.Namespace) -> Any:
    """The spec's ``--protocol`` (default ``finetune``) capped at ``--ft-steps``; ``--quick``: small batch
    and the spec's CPU-sized input size, so the same code path runs on CPU in seconds."""
    spec = spec.model_copy(deep=True)
    protocol = spec.protocols[args.protocol]
    protocol.schedule.max_steps = args.warmup_ft + args.ft_steps
    if args.quick:
        protocol.schedule.batch_size = min(protocol.schedule.batch_size, 4)
        small = next((spec.protocols[p] for p in CPU_SIZED_PROTOCOLS if p in spec.protocols), None)
        if small is not None and "input_size" in small.params:
            protocol.params["input_size"] = list(small.params["input_size"])
    return spec


def timing_only_text_tower(protocol: Any, folder: Path) -> None:
    """A retrieval protocol on CLIP's text tower with no checkpoint named (spec or SAIP_CLIP_TEXT_CHECKPOINT):
    save a randomly initialised tower of its config and use it; the step costs the same, the scores are
    meaningless (a timing run's are anyway)."""
    import os

    import torch

    from saip_bench.tasks.text.clip import CHECKPOINT_ENV, build_text_tower

    encoder = (protocol.params.get("head") or {}).get("text_encoder") or {}
    if encoder.get("type") != "open_clip" or encoder.get("checkpoint") or os.environ.get(CHECKPOINT_ENV):
        return
    fields = {k: v for k, v in encoder.items() if k not in ("type", "model", "checkpoint")}
    path = folder / "random_clip_text_tower.pt"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(build_text_tower(encoder.get("model", "ViT-B-16-quickgelu"), **fields).state_dict(), path)
    protocol.params["head"]["text_encoder"] = {**encoder, "checkpoint": str(path)}


def finetune_row(spec: Any, args: argparse.Namespace, world: Path, out: Path) -> dict[str, Any]:
    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.bench.runner import load_size
    from saip_bench.data.readers import read_dataset
    from saip_bench.tasks.base import UnitContext, get_task
    from saip_bench.tasks.dense.features import input_size
    from saip_bench.utils import seed_everything

    spec = finetune_spec(spec, args)
    protocol = spec.protocols[args.protocol]
    timing_only_text_tower(protocol, out / spec.key)
    data = read_dataset(spec.dataset, world / spec.dataset, version=spec.dataset_version)
    size = input_size(spec, args.protocol)
    backbone = create_backbone(args.backbone, img_size=load_size(args.backbone, size))
    task = get_task(spec.task)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            sync(args.device)
            tic = time.perf_counter()
            result = fn(*a, **k)
            sync(args.device)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - tic
            return result
        return wrapper

    task.predict = timed("predict", task.predict)  # type: ignore[method-assign]
    task.score = timed("score", task.score)  # type: ignore[method-assign]
    ctx = UnitContext(spec=spec, protocol=args.protocol, backbone=backbone, data=data, out_dir=out / spec.key,
                      seed=0, device=torch.device(args.device), amp=not args.fp32,
                      num_workers=args.workers, cache_dir=None, show_progress=False,
                      compile=bool(args.compile),  # a unit compiles its backbone's blocks (no step scope)
                      max_train_samples=8 if args.quick else None, max_eval_samples=4 if args.quick else None)
    seed_everything(0)
    reset_peak(args.device)
    tic = time.perf_counter()
    result = task.run(ctx)
    wall = time.perf_counter() - tic
    extra = result.extra
    ends, waits = extra.get("step_ends", []), extra.get("step_waits", [])
    seconds, wait, steps = window(ends, waits, args.warmup_ft) if ends else (float("nan"), 0.0, 0)
    batch = protocol.schedule.batch_size
    return {
        "case": spec.key, "status": "ok", "protocol": args.protocol, "input_size": list(size), "batch": batch,
        "compile": "blocks" if args.compile else False,
        "steps": extra.get("steps"), "timed_steps": steps,
        "train_images_per_s": round(steps * batch / seconds, 1) if steps else None,
        "data_wait_share": round(wait / seconds, 4) if steps else None,
        "fit_s": round(float(extra.get("fit_seconds", float("nan"))), 2),
        "eval_s": round(timings.get("predict", 0.0) + timings.get("score", 0.0), 2),
        "predict_s": round(timings.get("predict", 0.0), 2), "score_s": round(timings.get("score", 0.0), 2),
        "unit_wall_s": round(wall, 2), "peak_mib": peak_mib(args.device),
        "main_metric": result.main_metric, "main_score": round(float(result.main_score), 4),
        "eval_samples": result.n_samples.get("eval", result.n_samples.get("test")),
        **({"crops_made_on": extra["crops_made_on"]} if "crops_made_on" in extra else {}),
        **(per_step(*timed_steps(ends, waits, args.warmup_ft)) if ends else {}),
    }


def run_finetune(
    args: argparse.Namespace, world: Path, out: Path, clock: Clock, rows: list, save: Any
) -> None:
    from saip_bench.specs import all_task_specs

    specs = all_task_specs()
    keys = [k for k in specs if (not args.datasets or specs[k].dataset in args.datasets)
            and args.protocol in specs[k].protocols]
    for key in keys:
        if clock.left() <= 0:
            rows.append({"case": key, "status": "skipped (time budget)"})
            continue
        print(f"finetune {key} ({clock.elapsed():.0f} s)", file=sys.stderr, flush=True)
        row = {"case": key}
        try:
            row = finetune_row(specs[key], args, world, out)
        except Exception as exc:
            error_row(row, exc)
        rows.append(row)
        save()


# ------------------------------------------------------------------------------------------- report
def fmt(value: Any, pattern: str = "{:.1f}", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return pattern.format(value * scale)


def markdown(report: dict[str, Any]) -> str:
    scope = report.get("args", {}).get("compile")
    compiled = f", torch.compile ({scope})" if scope else ""
    lines = [f"## gpu_check on {report['device_name']} ({report['device']}, torch {report['torch']}, "
             f"{report['cpus']} CPUs, workers {report['workers']}{compiled}); {report['wall_s']:.0f} s", ""]
    tests = report.get("tests")
    if tests:
        lines += [f"CUDA tests: **{tests['status']}** {tests.get('summary', '')} ({tests['seconds']} s)", ""]
    if report.get("pretrain"):
        lines += ["| pretraining | precision | batch | ms/step | images/s | data wait | TFLOP/step | TFLOP/s "
                  "| MFU | peak MiB | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in report["pretrain"]:
            lines.append(
                f"| {r['case']} | {r.get('precision', '-')} | {r.get('batch', '-')} | "
                f"{fmt(r.get('ms_per_step'))} | {fmt(r.get('images_per_s'))} | "
                f"{fmt(r.get('data_wait_share'), '{:.1f}%', 100)} | {fmt(r.get('step_tflop'), '{:.3f}')} | "
                f"{fmt(r.get('achieved_tflops'))} | {fmt(r.get('mfu'), '{:.1f}%', 100)} | "
                f"{fmt(r.get('peak_mib') or r.get('peak_mem_mb'), '{:.0f}')} | {r['status']} |")
        lines.append("")
        for r in report["pretrain"]:
            if "graphs" in r:
                lines += [f"{r['case']}: {r['graphs']} graph(s) compiled; {r['timed_steps_compiling']} of "
                          f"{r['timed_steps']} timed steps compiled (left out of ms/step); steps that "
                          f"compiled: {', '.join(map(str, r['compiling_steps'])) or 'none'}", ""]
    if report.get("finetune"):
        lines += ["| fine-tune | input | batch | train images/s | data wait | eval s | peak MiB | main "
                  "| status |", "|---|---|---|---|---|---|---|---|---|"]
        for r in report["finetune"]:
            size = "x".join(map(str, r["input_size"])) if r.get("input_size") else "-"
            lines.append(
                f"| {r['case']} | {size} | {r.get('batch', '-')} | {fmt(r.get('train_images_per_s'))} | "
                f"{fmt(r.get('data_wait_share'), '{:.1f}%', 100)} | {fmt(r.get('eval_s'))} | "
                f"{fmt(r.get('peak_mib'), '{:.0f}')} | {r.get('main_metric', '')} "
                f"{fmt(r.get('main_score'), '{:.3f}')} | {r['status']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda (default where present) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny world, 2 steps, small batch (CPU/CI)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "gpu_check")
    parser.add_argument("--world", type=Path, default=None, help="a synthetic world (else generated)")
    parser.add_argument("--sections", default="tests,pretrain,finetune")
    parser.add_argument("--budget-s", type=float, default=330.0, help="no case starts after this")
    parser.add_argument("--reserve-s", type=float, default=150.0, help="budget kept for the fine-tunes")
    parser.add_argument("--tests-timeout", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: CPUs - 2)")
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--preset", default=None, help="pretraining preset (default: paper; quick: quick)")
    parser.add_argument("--batch", type=int, default=None, help="per-GPU micro-batch (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None, help="timed pretraining steps")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first pretraining steps")
    parser.add_argument("--ft-steps", type=int, default=None, help="timed fine-tune steps")
    parser.add_argument("--warmup-ft", type=int, default=None)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--compiled-rows", nargs="*", default=[], metavar="METHOD[:MODE]",
                        help="after the eager rows, time these methods again with their whole step "
                             "compiled (compile: step), e.g. saip saip:reduce-overhead (MODE: "
                             "torch.compile's mode, default torch's); each row's untimed warm-up takes "
                             "its compilation")
    parser.add_argument("--saip-batches", nargs="*", type=int, default=[],
                        help="also time SAIP at these per-GPU micro-batches (how the step scales)")
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--protocol", default="finetune", help="the fine-tune protocol timed per dataset")
    parser.add_argument("--no-reference", dest="reference", action="store_false")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--compile", nargs="?", const="blocks", default=None, choices=("blocks", "step"),
                        help="torch.compile the backbone's blocks in pretraining and fine-tuning (the "
                             "CLI's --compile), or with 'step' each pretraining method's whole forward and "
                             "backward (`saip-bench pretrain --compile step`; fine-tuning still compiles the "
                             "blocks); backend $SAIP_COMPILE_BACKEND (default inductor), step mode "
                             "$SAIP_COMPILE_MODE; the untimed warm-up steps (at least 1) take the "
                             "compilation")
    args = parser.parse_args(argv)

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    args.workers = args.workers if args.workers is not None else (0 if args.quick else max(1, cpus - 2))
    args.preset = args.preset or ("quick" if args.quick else "paper")
    defaults = (2, 1, 2, 1) if args.quick else (10, 3, 8, 2)
    args.steps = args.steps or defaults[0]
    args.warmup = args.warmup if args.warmup is not None else defaults[1]
    args.ft_steps = args.ft_steps or defaults[2]
    args.warmup_ft = args.warmup_ft if args.warmup_ft is not None else defaults[3]
    for spec in args.compiled_rows:  # before any work: a typo would otherwise cost a GPU call's row
        import torch._inductor

        method, mode = compiled_row(spec)
        modes = list(torch._inductor.list_mode_options())
        if method not in PRETRAIN_METHODS or mode not in modes:
            parser.error(f"--compiled-rows {spec}: expected METHOD[:MODE], METHOD one of "
                         f"{', '.join(PRETRAIN_METHODS)} and MODE one of {', '.join(modes)}")
    if args.compile:  # the first step compiles: never timed
        args.warmup, args.warmup_ft = max(1, args.warmup), max(1, args.warmup_ft)
    if args.quick and args.batch is None:
        args.batch = 4
    from saip_bench.utils import resolve_amp

    args.fp32 = args.fp32 or not resolve_amp(True, args.device)  # no emulated bf16 on a CPU without it
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    sections = set(args.sections.split(","))
    clock = Clock(args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "device": args.device, "torch": torch.__version__, "cpus": cpus, "workers": args.workers,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU",
        "quick": args.quick, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    json_path = args.out / "gpu_check.json"

    def save() -> None:  # after every section: a run killed at its time limit still leaves its figures
        report["wall_s"] = round(clock.elapsed(), 1)
        json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")

    world_proc = None
    world = args.world
    if world is None and sections & {"pretrain", "finetune"}:
        world = args.out / ("world_tiny" if args.quick else "world_gpu_check")
        # written by a child process while the tests run (the tests make their own tiny world)
        code = ("import sys; from saip_bench.data.synth import generate_world; "
                "generate_world(sys.argv[1], preset=sys.argv[2], seed=0, contact_sheets=False, "
                "workers=int(sys.argv[3]))")
        world_proc = subprocess.Popen(
            [sys.executable, "-c", code, str(world), "tiny" if args.quick else "gpu_check", str(cpus)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if "tests" in sections:
        print(f"tests ({clock.elapsed():.0f} s)", file=sys.stderr, flush=True)
        report["tests"] = run_tests(args, clock)
        save()
    if world_proc is not None:
        _, err = world_proc.communicate()
        report["world_s"] = round(clock.elapsed(), 1)
        if world_proc.returncode != 0:
            report["world_error"] = err[-3000:]
            save()
            print(err[-3000:], file=sys.stderr)
            return 1
    if "pretrain" in sections:
        report["pretrain"] = []
        run_pretrain(args, world / "pretrain", args.out / "pretrain", clock, report["pretrain"], save)
    if "finetune" in sections:
        report["finetune"] = []
        run_finetune(args, world, args.out / "units", clock, report["finetune"], save)
    save()
    table = markdown(report)
    (args.out / "gpu_check.md").write_text(table + "\n")
    print(table)
    failed = [r["case"] for key in ("pretrain", "finetune") for r in report.get(key, [])
              if r["status"] == "failed"]
    if report.get("tests", {}).get("status") in ("failed", "timeout"):
        failed.append("tests")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
