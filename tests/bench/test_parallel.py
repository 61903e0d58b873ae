import argparse

from saip_bench.bench.parallel import worker_argv
from saip_bench.commands.bench import add_bench_arguments, config_from_args


def test_worker_argv_reproduces_the_config(tmp_path):
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    argv = [
        "--preset",
        "smoke",
        "--run-dir",
        str(tmp_path / "r"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--limit",
        "3",
        "--overwrite",
        "always",
        "--methods",
        "saip",
        "--tasks",
        "reid",
        "lip",
        "--seeds",
        "0",
        "--checkpoint",
        f"saip/vit_tiny={tmp_path / 'x.safetensors'}",
        "--data-root",
        str(tmp_path / "d"),
        "--world",
        str(tmp_path / "w"),
    ]
    config = config_from_args(parser.parse_args(argv))
    again = config_from_args(parser.parse_args(worker_argv(config, "smoke")))
    for field in (
        "run_dir",
        "cache_dir",
        "limit",
        "overwrite",
        "methods",
        "tasks",
        "seeds",
        "checkpoints",
        "data_root",
        "pretrain_data",
        "device",
        "backbones",
        "world",
    ):
        assert getattr(again, field) == getattr(config, field), field
    assert again.preset == config.preset and not again.show_progress


# ---------------------------------------------------------------- one owner per run folder (issue 27, item 4)
def _hold_run_lock(path, ready, release) -> None:
    from saip_bench.locks import owner_lock

    with owner_lock(path, "run folder", "saip-bench --workers 2"):
        ready.set()
        release.wait(30)


def test_a_second_workers_run_on_one_run_folder_stops_with_one_line(tmp_path, monkeypatch):
    import multiprocessing as mp
    import os

    import pytest

    from saip_bench.bench import parallel
    from saip_bench.bench.runner import BenchRunner
    from saip_bench.locks import LockBusy

    def plan(self, *args, **kw):
        raise AssertionError("planned (and generated the world) although the run folder has an owner")

    monkeypatch.setattr(BenchRunner, "plan", plan)
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    config = config_from_args(parser.parse_args(["--preset", "smoke", "--run-dir", str(tmp_path / "run"),
                                                 "--cache-dir", str(tmp_path / "c")]))
    fork = mp.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    child = fork.Process(target=_hold_run_lock, args=(tmp_path / "run" / parallel.RUN_LOCK, ready, release))
    child.start()
    try:
        assert ready.wait(20)
        with pytest.raises(LockBusy) as caught:
            parallel.run_parallel(config, "smoke", 2)
    finally:
        release.set()
        child.join(20)
    message = str(caught.value)
    host = os.uname().nodename
    assert f"run folder {tmp_path / 'run'} is in use by pid {child.pid} on host {host}" in message
    assert "give another --out" in message and "\n" not in message


PARENT = """
import sys, time
from pathlib import Path
from saip_bench.bench.parallel import _run_workers
out = Path(sys.argv[1])
_run_workers([[str(out / "beat.txt")]], [out / "worker.log"], 1, module="beat_worker")
"""

BEAT = """
import os, sys, time
from pathlib import Path
beat = Path(sys.argv[1])
for step in range(600):  # each beat replaces the file whole: a reader never sees it empty or half written
    Path(f"{beat}.tmp").write_text(f"{os.getpid()} {step}")
    os.replace(f"{beat}.tmp", beat)
    time.sleep(0.05)
"""


def test_killing_the_parent_stops_its_workers(tmp_path):
    """Like ``kill -9`` of run_bench.py alone: its ``--workers`` processes must not go on writing."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    (tmp_path / "beat_worker.py").write_text(BEAT)
    beat = tmp_path / "beat.txt"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        # read once per look: the first beat's text is the one parsed (a second read raced the next beat's
        # rewrite and once found the file empty)
        while not (text := beat.read_text() if beat.exists() else ""):
            assert time.monotonic() < deadline and parent.poll() is None, "the worker never started"
            time.sleep(0.05)
        worker = int(text.split()[0])
    finally:
        parent.kill()
        parent.wait()

    def running() -> bool:
        try:
            return Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = running()
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "a worker outlived its parent"
