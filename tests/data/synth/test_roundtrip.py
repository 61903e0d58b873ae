"""Every synthetic export is read back by the real reader for that dataset and passes its ``verify``."""

from __future__ import annotations

from pathlib import Path

import pytest

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.data.synth import DATASETS, get_preset

TINY = get_preset("tiny")


@pytest.mark.parametrize("name", DATASETS)
def test_reader_reads_and_verifies_the_synthetic_export(synth_world: Path, name: str) -> None:
    data = read_dataset(name, synth_world / name)
    assert data.splits and all(records for records in data.splits.values()), name
    report = verify_dataset(name, synth_world / name, full=True)
    assert report.usable, report.to_json()
    assert not report.to_json()["problems"]


def test_reader_sees_the_preset_sizes(synth_world: Path) -> None:
    market = read_dataset("market1501", synth_world / "market1501").counts()
    assert market["train"]["identities"] == TINY.market_train_ids
    assert market["train"]["images"] == TINY.market_train_ids * TINY.market_train_per_id
    assert market["query"]["identities"] == TINY.market_test_ids
    pa = read_dataset("pa100k", synth_world / "pa100k").counts()
    assert [pa[s]["images"] for s in ("train", "val", "test")] == list(TINY.pa100k)
    cihp = read_dataset("cihp", synth_world / "cihp").counts()
    assert [cihp[s]["images"] for s in ("train", "val")] == list(TINY.cihp)


def test_petazs_version_reads_identity_disjoint(synth_world: Path) -> None:
    report = verify_dataset("peta", synth_world / "peta", version="zs", full=True)
    assert report.usable and not report.to_json()["problems"]
    data = read_dataset("peta", synth_world / "peta", version="zs")
    assert len(data.meta["eval_idx"]) == 35
