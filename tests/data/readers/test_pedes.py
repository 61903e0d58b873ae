import json

import pytest

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.errors import DataFormatError
from tests.data.readers.builders import PEDES_ENTRIES, build_cuhk_pedes, build_icfg_pedes


def test_cuhk_pedes_pid_offset_splits_and_all_captions(tmp_path):
    build_cuhk_pedes(tmp_path)
    data = read_dataset("cuhk_pedes", tmp_path)
    train = data.splits["train"]
    assert [r["pid"] for r in train] == [0, 1]  # id - 1
    assert train[0]["captions"] == PEDES_ENTRIES[0]["captions"]  # 3 captions kept
    assert train[0]["path"] == str((tmp_path / "imgs" / "CUHK01" / "0363004.png").resolve())
    assert train[0]["file_path"] == "CUHK01/0363004.png"
    assert [r["pid"] for r in data.splits["val"]] == [12004]  # raw id
    assert [r["pid"] for r in data.splits["test"]] == [13003]
    assert data.counts()["train"] == {"images": 2, "identities": 2, "captions": 4}


def test_cuhk_pedes_unknown_split_values_go_to_val(tmp_path):
    build_cuhk_pedes(tmp_path)
    entries = json.loads((tmp_path / "reid_raw.json").read_text())
    entries[2]["split"] = "validation"
    (tmp_path / "reid_raw.json").write_text(json.dumps(entries))
    assert len(read_dataset("cuhk_pedes", tmp_path).splits["val"]) == 1


def test_cuhk_pedes_caption_all_is_split_by_id(tmp_path):
    build_cuhk_pedes(tmp_path)
    entries = [{k: e[k] for k in ("id", "file_path", "captions")} for e in PEDES_ENTRIES]
    entries[1]["id"] = 11004
    (tmp_path / "reid_raw.json").unlink()
    (tmp_path / "caption_all.json").write_text(json.dumps(entries))
    data = read_dataset("cuhk_pedes", tmp_path)
    assert data.version == "caption_all"
    assert [r["pid"] for r in data.splits["train"]] == [0]
    assert [r["pid"] for r in data.splits["val"]] == [11004]
    assert [r["pid"] for r in data.splits["test"]] == [12004, 13003]
    assert any("no split field" in w for w in data.meta["warnings"])


def test_icfg_pedes_raw_ids_no_val(tmp_path):
    build_icfg_pedes(tmp_path)
    data = read_dataset("icfg_pedes", tmp_path)
    assert set(data.splits) == {"train", "test"}
    assert [r["pid"] for r in data.splits["train"]] == [0, 1]
    assert [r["pid"] for r in data.splits["test"]] == [3102]


def test_icfg_pedes_underscore_file_name_is_explained(tmp_path):
    build_icfg_pedes(tmp_path)
    (tmp_path / "ICFG-PEDES.json").rename(tmp_path / "ICFG_PEDES.json")
    with pytest.raises(DataFormatError, match="hyphen"):
        read_dataset("icfg_pedes", tmp_path)
    report = verify_dataset("icfg_pedes", tmp_path)
    assert not report.usable and any("ICFG-PEDES.json" in p for p in report.problems)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda e: e[0].pop("file_path"), "keys"),
        (lambda e: e[0].update(captions="one caption"), "captions"),
        (lambda e: e[0].update(captions=[]), "captions"),
        (lambda e: e[0].update(id="7"), "'id' as an integer"),
        (lambda e: e[0].update(split=3), "split"),
    ],
)
def test_malformed_pedes_entries_name_the_entry(tmp_path, mutate, expected):
    build_cuhk_pedes(tmp_path)
    entries = json.loads((tmp_path / "reid_raw.json").read_text())
    mutate(entries)
    (tmp_path / "reid_raw.json").write_text(json.dumps(entries))
    with pytest.raises(DataFormatError, match=rf"reid_raw\.json\[0\].*{expected}"):
        read_dataset("cuhk_pedes", tmp_path)


def test_truncated_json_names_position(tmp_path):
    build_cuhk_pedes(tmp_path)
    text = (tmp_path / "reid_raw.json").read_text()
    (tmp_path / "reid_raw.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataFormatError, match=r"reid_raw\.json: expected valid JSON, found .* line 1"):
        read_dataset("cuhk_pedes", tmp_path)
