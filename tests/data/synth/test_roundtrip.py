"""The readers see exactly the sizes the preset asks for (full read+verify of all 12 exports lives in
``tests/data/readers/test_synthetic_roundtrip.py``)."""

from __future__ import annotations

from pathlib import Path

from saip_bench.data.readers import read_dataset
from saip_bench.data.synth import get_preset

TINY = get_preset("tiny")


def test_reader_sees_the_preset_sizes(synth_world: Path) -> None:
    market = read_dataset("market1501", synth_world / "market1501").counts()
    assert market["train"]["identities"] == TINY.market_train_ids
    assert market["train"]["images"] == TINY.market_train_ids * TINY.market_train_per_id
    assert market["query"]["identities"] == TINY.market_test_ids
    pa = read_dataset("pa100k", synth_world / "pa100k").counts()
    assert [pa[s]["images"] for s in ("train", "val", "test")] == list(TINY.pa100k)
    cihp = read_dataset("cihp", synth_world / "cihp").counts()
    assert [cihp[s]["images"] for s in ("train", "val")] == list(TINY.cihp)
    coco = read_dataset("coco", synth_world / "coco").counts()
    assert [coco[s]["images"] for s in ("train", "val")] == list(TINY.coco)
