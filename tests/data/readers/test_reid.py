import pytest

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.data.readers.reid import parse_market_name
from saip_bench.errors import DataFormatError
from tests.data.readers.builders import build_market1501, build_msmt17, write_jpg


def test_real_market_query_names_parse_to_pid_1_and_cameras(realdata):
    files = sorted((realdata / "market1501" / "query").glob("*.jpg"))
    assert [f.name for f in files] == ["0001_c1s1_001051_00.jpg", "0001_c6s1_009601_00.jpg"]
    assert [parse_market_name(f) for f in files] == [(1, 1), (1, 6)]


def test_real_market_query_folder_reads_with_zero_based_cameras(realdata, tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    (root / "query").mkdir(parents=True)
    for f in (realdata / "market1501" / "query").glob("*.jpg"):
        (root / "query" / f.name).symlink_to(f)
    for folder in ("bounding_box_train", "bounding_box_test"):
        write_jpg(root / folder / "0001_c2s1_000001_00.jpg")
    data = read_dataset("market1501", tmp_path)  # the parent folder: the archive's top folder is found
    assert data.root == root.resolve()
    query = sorted(data.splits["query"], key=lambda r: r["camid"])
    assert [(r["pid"], r["camid"]) for r in query] == [(1, 0), (1, 5)]
    assert query[0]["path"].endswith("0001_c1s1_001051_00.jpg")


def test_market_drops_junk_keeps_distractors_and_ignores_other_files(tmp_path):
    build_market1501(tmp_path)
    data = read_dataset("market1501", tmp_path)
    gallery = data.splits["gallery"]
    assert sorted(r["pid"] for r in gallery) == [0, 1, 1, 3]
    assert data.meta["junk_dropped"] == {"train": 0, "query": 0, "gallery": 2}
    assert {r["camid"] for r in data.splits["train"]} == {0, 1, 2}
    assert data.counts()["gallery"] == {"images": 4, "identities": 3}


@pytest.mark.parametrize(
    "name", ["abc_c1s1_000001_00.jpg", "0001_c7s1_000001_00.jpg", "1502_c1s1_000001_00.jpg", "0001_x1s1.jpg"]
)
def test_bad_market_names_are_format_errors(tmp_path, name):
    build_market1501(tmp_path)
    write_jpg(tmp_path / "query" / name)
    with pytest.raises(DataFormatError, match=name.replace(".", r"\.")):
        read_dataset("market1501", tmp_path)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_msmt17_versions_detected_by_folder(tmp_path, version):
    build_msmt17(tmp_path, version)
    data = read_dataset("msmt17", tmp_path)
    assert data.version == version
    folder = "mask_train_v2" if version == "v2" else "train"
    train = data.splits["train"]
    assert [(r["pid"], r["camid"]) for r in train] == [(0, 0), (0, 4), (1, 14)]
    assert train[0]["path"].endswith(f"{folder}/0000/0000_000_01_0303morning_0015_0.jpg")
    assert [r["camid"] for r in data.splits["gallery"]] == [8, 11]
    assert data.counts()["val"] == {"images": 1, "identities": 1}
    report = verify_dataset("msmt17", tmp_path)
    assert report.version == version and report.available_versions == [version]


def test_msmt17_forced_version_with_other_layout_is_unusable(tmp_path):
    build_msmt17(tmp_path, "v1")
    report = verify_dataset("msmt17", tmp_path, version="v2")
    assert not report.usable
    assert any("mask_train_v2" in p for p in report.problems)


@pytest.mark.parametrize(
    "line",
    [
        "0000/0000_000_01_0303morning_0015_0.jpg",
        "0000/0000_000_01_x.jpg zero",
        "0000/0000_000_16_0303morning_0015_0.jpg 0",
        "0000/bad.jpg 0",
    ],
)
def test_msmt17_malformed_list_lines_name_the_line(tmp_path, line):
    build_msmt17(tmp_path, "v2")
    (tmp_path / "list_query.txt").write_text(line + "\n")
    with pytest.raises(DataFormatError, match=r"list_query\.txt:1"):
        read_dataset("msmt17", tmp_path)


def test_msmt17_missing_split_file(tmp_path):
    build_msmt17(tmp_path, "v2")
    (tmp_path / "list_gallery.txt").unlink()
    with pytest.raises(DataFormatError, match="list_gallery.txt.*missing split file"):
        read_dataset("msmt17", tmp_path, version="v2")
