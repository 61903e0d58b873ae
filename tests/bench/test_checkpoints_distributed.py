"""The checkpoint cache under a process group: the ranks pretrain together (a collective inside the
pretrainer), only rank 0 takes the file lock, and a failed pretraining is not retried."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from saip_bench.bench.checkpoints import CheckpointCache
from saip_bench.errors import TrainingError
from tests.ranks import free_port, run_ranks


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
    dist.destroy_process_group()


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
