"""The synthetic world (``saip_bench.data.synth``) read back through the same readers as real data.

Every dataset must read, verify as usable (declared synthetic, every file opened), and reproduce the
format traps in docs/formats.md#reader-checklist that the readers handle, so synthetic runs exercise the real
code path.
"""

from __future__ import annotations

import pytest

from saip_bench.data.readers import load_label, read_dataset, verify_dataset
from saip_bench.specs import DATASET_NAMES


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_every_synthetic_dataset_reads_and_verifies(synth_world, name):
    data = read_dataset(name, synth_world / name)
    assert data.splits and all(data.splits.values()), data.counts()
    report = verify_dataset(name, synth_world / name, full=True)
    assert report.synthetic
    assert report.usable, report.problems
    assert report.splits == data.counts()
    assert report.files_checked >= sum(len(v) for k, v in data.splits.items() if k != "trainval")


def test_synthetic_market_has_junk_and_distractors(synth_world):
    data = read_dataset("market1501", synth_world / "market1501")
    assert data.meta["junk_dropped"]["gallery"] > 0
    assert 0 in {r["pid"] for r in data.splits["gallery"]}
    assert {r["camid"] for r in data.splits["query"]} <= set(range(6))


def test_synthetic_peta_both_versions(synth_world):
    peta = read_dataset("peta", synth_world / "peta")
    assert len(peta.meta["attribute_names"]) == 105 and peta.meta["eval_idx"] == list(range(35))
    zs = read_dataset("peta", synth_world / "peta", version="zs")
    assert len(zs.meta["attribute_names"]) == 35 and zs.meta["eval_idx"] == list(range(35))
    report = verify_dataset("peta", synth_world / "peta", version="zs", full=True)
    assert report.usable, report.problems  # includes the identity-disjointness check
    trainval_ids = {r["identity"] for r in zs.splits["trainval"]}
    assert trainval_ids and not trainval_ids & {r["identity"] for r in zs.splits["test"]}


def test_synthetic_keypoints_and_parsing_traps(synth_world):
    wholebody = read_dataset("coco_wholebody", synth_world / "coco_wholebody")
    anns = [a for r in wholebody.splits["val"] for a in r["annotations"]]
    assert anns and all(len(a["keypoints"]) == 399 for a in anns)
    coco = read_dataset("coco", synth_world / "coco")
    assert all(len(a["keypoints"]) == 51 for r in coco.splits["train"] for a in r["annotations"])
    for name in ("lip", "cihp"):
        data = read_dataset(name, synth_world / name)
        record = data.splits["val"][0]
        assert load_label(record["label_path"]).ndim == 2


def test_synthetic_crowdhuman_and_fashionpedia_traps(synth_world):
    crowd = read_dataset("crowdhuman", synth_world / "crowdhuman")
    records = crowd.splits["train"]
    assert all("," in r["id"] for r in records)
    assert any(b["tag"] == "mask" and b["ignore"] for r in records for b in r["boxes"])
    fashion = read_dataset("fashionpedia", synth_world / "fashionpedia")
    raw_ids = sorted(fashion.meta["attribute_index"])
    assert raw_ids != list(range(len(raw_ids)))  # non-contiguous, as in the release
    assert sorted(fashion.meta["attribute_index"].values()) == list(range(len(raw_ids)))
    assert min(c["id"] for c in fashion.meta["categories"]) == 0
    assert all(r["path"].split("/")[-2] == "test" for r in fashion.splits["val"])
