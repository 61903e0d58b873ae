"""The one reader/writer of ``keypoints.json``: round trip, provenance from the head, clear errors."""

from __future__ import annotations

import json

import pytest

from saip_bench.errors import DataFormatError
from saip_bench.pretrain.keypoint_file import read_keypoints, read_provenance, write_keypoints

POINTS = [[float(i), float(2 * i), 2.0] for i in range(17)]


def test_round_trip_with_provenance_first_and_same_bytes(tmp_path):
    table = {"images/b/2.jpg": POINTS, "images/a/1.jpg": POINTS}
    provenance = {"checkpoint": {"backbone_sha256": "ab"}, "date": "2023-11-14T22:13:20+00:00"}
    write_keypoints(tmp_path / "k.json", table, provenance)
    first = (tmp_path / "k.json").read_bytes()
    assert first.startswith(b'{"_provenance":')
    read, read_back = read_keypoints(tmp_path / "k.json")
    assert read == table and list(read) == list(table) and read_back == provenance  # order kept
    assert read_provenance(tmp_path / "k.json") == provenance
    write_keypoints(tmp_path / "k.json", table, provenance)
    assert (tmp_path / "k.json").read_bytes() == first


def test_files_without_provenance_read_as_before(tmp_path):
    (tmp_path / "k.json").write_text(json.dumps({"images/a/1.jpg": POINTS}))
    assert read_keypoints(tmp_path / "k.json") == ({"images/a/1.jpg": POINTS}, None)
    assert read_provenance(tmp_path / "k.json") is None


@pytest.mark.parametrize("value, found", [
    (POINTS[:16], "16 entries for 'images/a/1.jpg'"),
    ([[1.0, 2.0]] * 17, "17 entries for 'images/a/1.jpg'"),
    ([[1.0, float("nan"), 2.0]] * 17, "for 'images/a/1.jpg'"),
    ("nope", "str for 'images/a/1.jpg'"),
])
def test_a_bad_entry_names_the_file_and_the_image(tmp_path, value, found):
    (tmp_path / "k.json").write_text(json.dumps({"images/a/1.jpg": value}))
    with pytest.raises(DataFormatError, match="17 \\[x, y, v\\] triples") as info:
        read_keypoints(tmp_path / "k.json")
    assert str(tmp_path / "k.json") in str(info.value) and found in str(info.value)
    with pytest.raises(DataFormatError, match="1.jpg"):
        write_keypoints(tmp_path / "w.json", {"images/a/1.jpg": value}, {})
    assert not (tmp_path / "w.json").exists()


def test_not_json_or_not_an_object_is_named(tmp_path):
    (tmp_path / "k.json").write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="a JSON object, found list"):
        read_keypoints(tmp_path / "k.json")
    (tmp_path / "k.json").write_text("{")
    with pytest.raises(DataFormatError, match="k.json"):
        read_keypoints(tmp_path / "k.json")
    with pytest.raises(DataFormatError, match="reserved key"):
        write_keypoints(tmp_path / "w.json", {"_provenance": POINTS}, {})
