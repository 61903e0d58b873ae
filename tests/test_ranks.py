"""The rank helper fails a test whose ranks hang, instead of stalling the suite, and says where they hung."""

import time

import pytest

from tests.ranks import run_ranks


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
