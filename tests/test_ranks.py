"""The rank helper fails a test whose ranks hang, instead of stalling the suite, and says where they hung."""

import json
import time
from pathlib import Path

import pytest
import torch

from tests.ranks import race, run_ranks


def _hang_on_rank_one(rank: int) -> None:
    if rank == 1:
        time.sleep(600)


def test_a_stuck_rank_fails_the_test_and_is_killed():
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"ranks \[1\] still running") as failed:
        run_ranks(_hang_on_rank_one, timeout_s=2)
    assert time.monotonic() - start < 30
    # the message carries where the stuck rank was: its Python stack, down to the sleeping line
    assert "rank 1:" in str(failed.value) and "_hang_on_rank_one" in str(failed.value)
    assert "rank 0:" not in str(failed.value)


def _write_threads(rank: int, out: str) -> None:
    Path(out, f"rank{rank}.json").write_text(json.dumps(torch.get_num_threads()))


def _write_threads_raced(out: str, go) -> None:
    go.wait(10)
    Path(out, f"child{time.monotonic_ns()}.json").write_text(json.dumps(torch.get_num_threads()))


def test_forked_children_start_with_one_thread_and_the_parent_keeps_its_own(tmp_path):
    """The children never call ``torch.set_num_threads`` (a fresh rank once hung inside it): they
    inherit one thread from the parent, which gets its own setting back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_ranks(_write_threads, args=(str(tmp_path),), timeout_s=60)
        race(_write_threads_raced, args=(str(tmp_path),), timeout_s=60)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    counts = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.json"))]
    assert counts == [1, 1, 1, 1]
