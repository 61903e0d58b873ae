"""The distributed rules of the bench (saip_bench/bench/schedule.py): launch-file reports, stale ranks,
split verdicts, SLURM job arrays, and real ``torchrun`` launches (one rank killed; two "nodes")."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from saip_bench.bench.schedule import (
    DistInfo,
    DistributedFault,
    RankBoard,
    agree_on_failure,
    collective_timeout_s,
    slurm_array_shard,
    spread,
)
from saip_bench.commands.bench import resolve_shard
from saip_bench.errors import UserError
from tests.ranks import free_port, leave_group, run_ranks

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "tests" / "bench" / "torchrun_entry.py"


def test_spread_gives_every_unit_to_exactly_one_rank():
    units = list(range(11))
    shares = [spread(units, DistInfo(rank, 3)) for rank in range(3)]
    assert sorted(u for share in shares for u in share) == units
    assert [len(share) for share in shares] == [4, 4, 3]


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "7"}, (1, 8)),
    ({"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "8"}, (8, 8)),
    ({}, None),
])
def test_slurm_job_array_maps_to_a_shard(env, expected):
    assert slurm_array_shard(env) == expected


def test_slurm_array_with_a_step_is_refused():
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_MAX": "14"}
    with pytest.raises(UserError, match="not 8 contiguous ids"):
        slurm_array_shard(env)


def test_bench_shard_defaults_to_the_slurm_array_task(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "3")
    assert resolve_shard(None) == (4, 4)
    assert resolve_shard("1/2") == (1, 2)  # an explicit --shard wins


def test_bad_launch_settings_are_clear_errors(monkeypatch):
    monkeypatch.setenv("SAIP_DIST_TIMEOUT_S", "soon")
    with pytest.raises(UserError, match="SAIP_DIST_TIMEOUT_S"):
        collective_timeout_s()
    monkeypatch.setenv("SAIP_DIST_TIMEOUT_S", "90")
    assert collective_timeout_s() == 90
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="need 0 <= RANK < WORLD_SIZE"):
        DistInfo.from_env()
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="MASTER_ADDR, MASTER_PORT not set|MASTER_ADDR"):
        DistInfo(0, 2).init()


def _board(tmp_path: Path, rank: int, token: str = "launch") -> RankBoard:
    return RankBoard(tmp_path, DistInfo(rank, 2), token=token)


def test_rank0_gathers_the_reports_of_this_launch_only(tmp_path):
    old = _board(tmp_path, 1, token="earlier")
    old.finish(["old.json"], {})  # a report left by an earlier launch
    _board(tmp_path, 0).finish(["a.json"], {})
    main = _board(tmp_path, 0)

    late = _board(tmp_path, 1)
    late.beat()
    seen: list[list[int]] = []

    def note(ranks, units):
        seen.append(ranks)
        late.finish(["b.json"], {"u": "boom"})

    reports = main.gather(note, poll_s=0.01)
    assert seen == [[1]] and [r["written"] for r in reports] == [["a.json"], ["b.json"]]
    assert reports[1]["failed"] == {"u": "boom"}


def test_a_rank_whose_heartbeat_stops_is_named_with_its_unit(tmp_path):
    _board(tmp_path, 0).finish([], {})
    gone = _board(tmp_path, 1)
    gone.unit = "unit saip__vit_tiny__pose__coco__finetune__seed0"
    gone.beat()
    beat = json.loads(gone.heartbeat_path(1).read_text())
    beat["beat"] -= 1000
    gone.heartbeat_path(1).write_text(json.dumps(beat))
    with pytest.raises(DistributedFault, match=r"rank 1 on .* stopped answering .*pose__coco__finetune"):
        _board(tmp_path, 0).gather(poll_s=0.01, stale_after_s=60)


def _split_verdict(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    info = DistInfo(rank, 2)
    result = {"both": agree_on_failure(True, "x", info), "none": agree_on_failure(False, "x", info)}
    try:
        agree_on_failure(rank == 1, "the pretraining of saip/vit_tiny", info)
    except DistributedFault as exc:
        result["split"] = str(exc)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    leave_group()


def test_ranks_agree_on_a_failure_and_a_split_verdict_stops_every_rank(tmp_path):
    run_ranks(_split_verdict, args=(free_port(), str(tmp_path)), timeout_s=120)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["both"] is True and result["none"] is False
        assert "failed on rank(s) [1] only" in result["split"]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, str(ENTRY)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_torchrun_one_rank_killed_mid_unit_ends_every_rank_and_a_rerun_completes(tmp_path):
    launch = _torchrun("--standalone", "--nproc_per_node", "2", "--monitor-interval", "1")
    proc = subprocess.Popen([*launch, str(tmp_path), "pa100k"], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid_file = tmp_path / "slow.pid"
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert pid_file.exists(), "no rank reached the slow unit"
        time.sleep(0.5)
        killed_at = time.monotonic()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
        ended_after = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and ended_after < 120
    said = " ".join(output.split())
    assert "stopped by signal SIGTERM" in said and "attributes__pa100k" in said, output[-3000:]
    written_before = len(list((tmp_path / "run" / "records").glob("*.json")))
    rerun = subprocess.run([*launch, str(tmp_path)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    said = " ".join((rerun.stdout + rerun.stderr).split())
    assert f"{12 - written_before} record(s) written, 0 failed" in said
    assert len(list((tmp_path / "run" / "records").glob("*.json"))) == 12


def test_two_nodes_meet_through_a_c10d_rendezvous(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = _torchrun("--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                       "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes")
    nodes = [subprocess.Popen([*launch, str(tmp_path)], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert any("12 record(s) written, 0 failed" in " ".join(out.split()) for out in outputs)
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    assert len(records) == 12 and {r["provenance"]["launch_world_size"] for r in records} == {2}


def test_torchrun_failed_units_on_one_rank_do_not_stop_the_others(tmp_path):
    """Rank 1 finishes early with failed units: it exits 0 (rank 0 reports for all), so torchrun does not
    stop rank 0 mid-plan; rank 0 reports every failure and exits 1."""
    launch = _torchrun("--standalone", "--nproc_per_node", "2")
    proc = subprocess.run([*launch, str(tmp_path), "-", "market1501"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1 and "SIGTERM" not in said, said[-3000:]
    assert "8 record(s) written, 4 failed" in said
    assert len(list((tmp_path / "run" / "records").glob("*.json"))) == 8


def test_unit_mode_rule():
    from saip_bench.bench.schedule import DATA_PARALLEL, SPREAD, unit_mode

    long_gpu = {"kind": "finetune", "batch_size": 64, "max_steps": None, "world": 4, "on_gpu": True}
    assert unit_mode(**long_gpu) == DATA_PARALLEL  # 16 per GPU, uncapped fine-tune
    assert unit_mode(**{**long_gpu, "batch_size": 32}) == SPREAD  # 8 per GPU: too few to fill one
    assert unit_mode(**{**long_gpu, "batch_size": 66}) == SPREAD  # does not split over 4 ranks
    assert unit_mode(**{**long_gpu, "max_steps": 20}) == SPREAD  # a short CPU protocol
    assert unit_mode(**{**long_gpu, "on_gpu": False}) == SPREAD
    assert unit_mode(**{**long_gpu, "kind": "linear"}) == SPREAD  # frozen heads: cached features
    assert unit_mode(**{**long_gpu, "world": 1}) == SPREAD
    assert unit_mode(**{**long_gpu, "on_gpu": False}, policy="data") == DATA_PARALLEL
    assert unit_mode(**long_gpu, policy="spread") == SPREAD
    with pytest.raises(UserError, match="--unit-parallel 'both'"):
        unit_mode(**long_gpu, policy="both")


def test_rank0_exiting_non_zero_waits_for_the_others_to_leave_then_stops_waiting(tmp_path):
    """The ranks that left are not waited for; one that never says so is named after the bounded wait, and
    a marker of an earlier launch (another token) does not count."""
    boards = [RankBoard(tmp_path, DistInfo(rank, 3), token="now") for rank in range(3)]
    boards[1].leave()
    RankBoard(tmp_path, DistInfo(2, 3), token="earlier launch").leave()
    assert boards[0].wait_for_leavers(timeout_s=0.3, grace_s=0.0, poll_s=0.05) == [2]
    boards[2].leave()
    assert boards[0].wait_for_leavers(timeout_s=5.0, grace_s=0.0) == []
