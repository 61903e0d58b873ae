"""Checkpoint cache keys: everything that makes two pretrainings differ."""

from saip_bench.bench.checkpoints import checkpoint_key


def test_checkpoint_key_separates_bf16_and_fp32_pretraining():
    args = ("saip", "vit_tiny", "quick", 0, 60, "data")
    assert checkpoint_key(*args, bf16_native=False) != checkpoint_key(*args, bf16_native=True)
    assert checkpoint_key(*args, bf16_native=False) == checkpoint_key(*args, bf16_native=False)
