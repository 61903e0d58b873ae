import json
import os
import signal
import subprocess
import sys
import time

import pytest

from saip_bench.bench.plan import Unit
from saip_bench.bench.store import OverwritePolicy, RecordStore, UnitStatus, load_records, needs_run
from saip_bench.errors import SpecError
from saip_bench.specs import load_record
from tests.ranks import race

UNIT = Unit("saip", "vit_tiny", "reid", "market1501", "linear", 0)


def record(score: float = 90.0, key: str = "k1", padding: int = 0) -> dict:
    return {
        "identity": UNIT.identity(), "scores": {"rank1": score}, "main_metric": "rank1", "main_score": score,
        "direction": "max", "provenance": {"unit_key": key, "padding": "x" * padding},
    }


def test_write_read_status(tmp_path):
    store = RecordStore(tmp_path)
    assert store.status(UNIT, "k1") is UnitStatus.MISSING
    path = store.write(record())
    assert path == tmp_path / f"{UNIT.uid}.json"
    assert store.read(UNIT).main_score == 90.0
    assert store.status(UNIT, "k1") is UnitStatus.DONE
    assert store.status(UNIT, "k2") is UnitStatus.STALE
    path.write_text("{not json")
    assert store.status(UNIT, "k1") is UnitStatus.INVALID


def test_invalid_record_is_rejected_before_writing(tmp_path):
    bad = record()
    bad["main_metric"] = "mAP"  # not among scores
    with pytest.raises(ValueError):
        RecordStore(tmp_path).write(bad)
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_leaves_previous_record_and_no_temp(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    store.write(record(80.0))

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.write(record(95.0))
    assert [p.name for p in tmp_path.iterdir()] == [f"{UNIT.uid}.json"]
    assert store.read(UNIT).main_score == 80.0


WRITER = """
import sys
from saip_bench.bench.store import RecordStore
from tests.bench.test_store import record
store = RecordStore(sys.argv[1])
i = 0
print("ready", flush=True)
while True:
    i += 1
    store.write(record(float(i % 100), padding=200_000))
"""


def test_killed_writer_never_leaves_a_partial_record(tmp_path):
    """SIGKILL a process that rewrites a large record in a loop: the record always parses and validates."""
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                                cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3 + 0.2 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        final = tmp_path / f"{UNIT.uid}.json"
        if final.exists():
            data = json.loads(final.read_text())
            assert len(data["provenance"]["padding"]) == 200_000
            load_record(final)
    assert (tmp_path / f"{UNIT.uid}.json").exists()
    # killed mid-write temp files are hidden dot-files that never count as records
    assert [p.name for p in load_records_paths(tmp_path)] == [f"{UNIT.uid}.json"]


def load_records_paths(folder):
    from saip_bench.bench.store import record_files

    return record_files([folder])


@pytest.mark.parametrize("status,policy,expected", [
    (UnitStatus.MISSING, OverwritePolicy.NEVER, True),
    (UnitStatus.STALE, OverwritePolicy.NEVER, False),
    (UnitStatus.DONE, OverwritePolicy.NEVER, False),
    (UnitStatus.STALE, OverwritePolicy.MISSING, True),
    (UnitStatus.INVALID, OverwritePolicy.MISSING, True),
    (UnitStatus.DONE, OverwritePolicy.MISSING, False),
    (UnitStatus.DONE, OverwritePolicy.ALWAYS, True),
])
def test_overwrite_policy(status, policy, expected):
    assert needs_run(status, policy) is expected


def test_load_records_names_invalid_file(tmp_path):
    store = RecordStore(tmp_path / "records")
    store.write(record())
    (tmp_path / "records" / "broken.json").write_text("[]")
    with pytest.raises(SpecError, match="broken.json"):
        load_records([tmp_path])
    assert len(load_records([tmp_path], skip_invalid=True)) == 1


# ---------------------------------------------------------------- one owner per unit (issue 27, item 4)
def _claim_in_child(directory, ready, release) -> None:
    store = RecordStore(directory)
    assert store.claim(UNIT) is None
    ready.set()
    release.wait(30)


def test_a_unit_claimed_by_another_process_is_not_claimed_again(tmp_path):
    import multiprocessing as mp

    fork = mp.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    child = fork.Process(target=_claim_in_child, args=(tmp_path, ready, release))
    child.start()
    try:
        assert ready.wait(20)
        why = RecordStore(tmp_path).claim(UNIT)
        assert why is not None and f"unit {UNIT.uid} is in use by pid {child.pid} on host" in why
    finally:
        release.set()
        child.join(20)
    assert RecordStore(tmp_path).claim(UNIT) is None  # free again once the owner let go


def test_a_record_written_by_another_process_after_planning_is_not_recomputed(tmp_path):
    mine, theirs = RecordStore(tmp_path), RecordStore(tmp_path)
    assert mine.status(UNIT, "k1") is UnitStatus.MISSING  # planned: to run
    theirs.write(record())  # another process ran it meanwhile
    why = mine.claim(UNIT)
    assert why is not None and "written by another process after this run planned it" in why
    mine.write(record(91.0))  # a unit this process ran itself stays claimable for a rerun
    assert mine.claim(UNIT) is None


def _bench_in_child(tmp, go) -> None:
    """One benchmark process (fakes; each unit logs its run and takes a while)."""
    from saip_bench.bench.runner import BenchHooks, run_bench
    from tests.bench.fakes import FAKE_SPECS, FakePretrainer, FakeTask, fake_loader, fake_read, fake_world
    from tests.bench.test_runner import config

    class SlowTask(FakeTask):
        def run(self, ctx):
            with open(tmp / "task-runs.txt", "a") as handle:
                handle.write(f"{ctx.out_dir.name}\n")
            time.sleep(0.15)
            return super().run(ctx)

    hooks = BenchHooks(specs=FAKE_SPECS, get_task=lambda name: SlowTask(), read_dataset=fake_read,
                       generate_world=fake_world, pretrainer=FakePretrainer(), backbone_loader=fake_loader,
                       method_unsupported=lambda m, b: None)
    while not go.is_set():
        time.sleep(0.01)
    report = run_bench(config(tmp), hooks)
    os._exit(0 if report.ok else 1)


def test_two_benchmarks_on_one_run_folder_compute_each_unit_once(tmp_path):
    """Both processes plan all 12 units at once; the per-unit claims split them (was: most ran twice)."""
    race(_bench_in_child, (tmp_path,))
    runs = (tmp_path / "task-runs.txt").read_text().split()
    assert len(runs) == 12 and len(set(runs)) == 12, sorted(runs)
    assert len(load_records([tmp_path / "run"])) == 12
