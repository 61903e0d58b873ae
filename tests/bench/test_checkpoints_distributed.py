"""The checkpoint cache under a process group: the ranks pretrain together (a collective inside the
pretrainer), only rank 0 takes the file lock, a failure on one rank is raised on every rank (never a
hang), and a failed pretraining is not retried."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from saip_bench.bench.checkpoints import CheckpointCache, checkpoint_key
from saip_bench.errors import TrainingError
from saip_bench.locks import owner_lock
from tests.ranks import free_port, leave_group, run_ranks


def _collective_pretrainer(*, out_dir: Path, **_: object) -> Path:
    """Like DDP training: every rank must enter, or the others wait (here: for 20 s, then fail)."""
    total = torch.ones(1)
    dist.all_reduce(total)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "backbone.safetensors"
    if dist.get_rank() == 0:  # a real (tiny) weights file: the cache hashes its tensors
        from safetensors.torch import save_file

        save_file({"w": torch.ones(2)}, str(path))
    dist.barrier()
    return path


def _rank(rank: int, port: int, cache: str, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    store = CheckpointCache(cache, pretrainer=_collective_pretrainer, is_writer=rank == 0)
    first = store.ensure("saip", "vit_tiny", "quick", 0, 2, Path(cache), "fp", False)
    again = CheckpointCache(cache, pretrainer=_collective_pretrainer, is_writer=rank == 0)
    found = again.ensure("saip", "vit_tiny", "quick", 0, 2, Path(cache), "fp", False)  # from the marker
    Path(out, f"rank{rank}.json").write_text(json.dumps([first.path, found.path, first.sha256]))
    leave_group()


def test_ranks_pretrain_a_checkpoint_together_without_deadlock(tmp_path):
    run_ranks(_rank, args=(free_port(), str(tmp_path / "cache"), str(tmp_path)))
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0 == rank1 and rank0[0] == rank0[1]


def test_a_failed_pretraining_is_not_retried(tmp_path):
    calls = []

    def failing(**_: object) -> Path:
        calls.append(1)
        raise TrainingError("diverged at step 3")

    store = CheckpointCache(tmp_path, pretrainer=failing)
    for _ in range(3):
        with pytest.raises(TrainingError, match="diverged at step 3"):
            store.ensure("saip", "vit_tiny", "quick", 0, 2, tmp_path, "fp", False)
    assert len(calls) == 1


def _failing_on(bad_rank: int):
    def pretrainer(*, out_dir: Path, **_: object) -> Path:
        path = _collective_pretrainer(out_dir=out_dir)
        if dist.get_rank() == bad_rank:  # after the shared training: the other rank goes on
            raise TrainingError(f"export unreadable on rank {bad_rank}")
        return path

    return pretrainer


def _rank_failing(rank: int, port: int, cache: str, out: str, bad_rank: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    store = CheckpointCache(cache, pretrainer=_failing_on(bad_rank), is_writer=rank == 0)
    said = []
    for _ in range(2):  # the second call: remembered, on this rank alone (no collective to pair up)
        try:
            store.ensure("saip", "vit_tiny", "quick", 0, 2, Path(cache), "fp", False)
            said.append("ok")
        except TrainingError as exc:
            said.append(str(exc))
    dist.barrier()  # both ranks still pair up after the failure
    Path(out, f"rank{rank}.json").write_text(json.dumps(said))
    leave_group()


@pytest.mark.parametrize("bad_rank", [0, 1])
def test_a_pretraining_failing_on_one_rank_fails_on_every_rank(tmp_path, bad_rank):
    run_ranks(_rank_failing, args=(free_port(), str(tmp_path / "cache"), str(tmp_path), bad_rank),
              timeout_s=120)
    for rank in (0, 1):
        said = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert len(said) == 2 and all(f"export unreadable on rank {bad_rank}" in text for text in said), said
        if rank != bad_rank:
            assert f"on rank {bad_rank}" in said[0]
    assert not list((tmp_path / "cache").glob("*/checkpoint.json"))


def _rank_busy(rank: int, port: int, cache: str, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "SAIP_BENCH_LOCK_WAIT": "0"})
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    store = CheckpointCache(cache, pretrainer=_collective_pretrainer, is_writer=rank == 0)
    said = []
    for _ in range(2):
        try:
            store.ensure("saip", "vit_tiny", "quick", 0, 2, Path(cache), "fp", False)
            said.append("ok")
        except Exception as exc:
            said.append(f"{type(exc).__name__}: {exc}")
    dist.barrier()
    Path(out, f"rank{rank}.json").write_text(json.dumps(said))
    leave_group()


def test_a_busy_cache_entry_stops_every_rank_without_a_hang(tmp_path):
    """Another run holds the entry's lock (here: the test process): rank 0 cannot take it, and rank 1,
    which does not take the lock, hears so instead of waiting in a broadcast that never comes."""
    cache = tmp_path / "cache"
    probe = CheckpointCache(cache, pretrainer=_collective_pretrainer)
    key = checkpoint_key("saip", "vit_tiny", "quick", 0, 2, "fp", False)
    folder = probe.folder("saip", "vit_tiny", "quick", 0, key)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with owner_lock(folder.with_name(folder.name + ".lock"), "test", "holding it"):
        run_ranks(_rank_busy, args=(free_port(), str(cache), str(tmp_path)), timeout_s=120)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0[0].startswith("LockBusy") and "holding it" in rank0[0], rank0
    assert rank1[0].startswith("TrainingError") and "rank 0 could not open" in rank1[0], rank1
    assert all("failed earlier in this run" in text for text in (rank0[1], rank1[1]))
