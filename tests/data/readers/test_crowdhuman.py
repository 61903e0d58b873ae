import json

import pytest

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.errors import DataFormatError
from tests.data.readers.builders import CROWD_LINE, build_crowdhuman


def test_crowdhuman_comma_ids_masks_and_sizes(tmp_path):
    build_crowdhuman(tmp_path)
    data = read_dataset("crowdhuman", tmp_path)
    first = data.splits["train"][0]
    assert first["id"] == "283554,35288000868e92d4"
    assert first["path"] == str(tmp_path.resolve() / "Images" / "283554,35288000868e92d4.jpg")
    assert (first["width"], first["height"]) == (120, 100)  # from the image: the odgt has no size
    assert [b["tag"] for b in first["boxes"]] == ["person", "person", "mask"]
    assert [b["ignore"] for b in first["boxes"]] == [False, True, True]  # extra.ignore and mask
    assert first["boxes"][0]["fbox"] == [-5.0, 10.0, 40.0, 90.0]  # may leave the image; kept as is
    assert first["boxes"][0]["vbox"] == CROWD_LINE["gtboxes"][0]["vbox"]
    assert data.counts()["train"] == {"images": 2, "persons": 3, "ignore_regions": 2}
    assert data.meta["image_sizes"]["val"] == {"284193,faa9000f2678b5e": [48, 64]}
    assert data.meta["gt_files"]["train"].endswith("annotation_train.odgt")


def test_crowdhuman_sizes_from_mmdet_id_hw(tmp_path):
    build_crowdhuman(tmp_path)
    (tmp_path / "id_hw_val.json").write_text(json.dumps({"284193,faa9000f2678b5e": [480, 640]}))
    assert read_dataset("crowdhuman", tmp_path).splits["val"][0]["height"] == 480


def test_malformed_odgt_line_names_file_and_line(tmp_path):
    build_crowdhuman(tmp_path)
    path = tmp_path / "annotation_train.odgt"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:-5] + "\n")
    with pytest.raises(DataFormatError, match=r"annotation_train\.odgt:2: expected one JSON object per line"):
        read_dataset("crowdhuman", tmp_path)
    report = verify_dataset("crowdhuman", tmp_path)
    assert not report.usable and "annotation_train.odgt:2" in report.problems[0]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ({"tag": "person"}, "keys"),
        ({"tag": "person", "fbox": [1, 2, 3]}, "'fbox' as a list of 4 numbers"),
        ({"tag": 1, "fbox": [1, 2, 3, 4]}, "'tag' as a string"),
    ],
)
def test_malformed_gtbox(tmp_path, box, expected):
    build_crowdhuman(tmp_path)
    (tmp_path / "annotation_val.odgt").write_text(json.dumps({"ID": "1,a", "gtboxes": [box]}) + "\n")
    with pytest.raises(DataFormatError, match=rf"annotation_val\.odgt:1 gtboxes\[0\].*{expected}"):
        read_dataset("crowdhuman", tmp_path)


def test_missing_images_are_listed(tmp_path):
    build_crowdhuman(tmp_path)
    (tmp_path / "Images" / "284193,faa9000f2678b5e.jpg").unlink()
    report = verify_dataset("crowdhuman", tmp_path)
    missing = [p for p in report.problems if "found nothing at that path" in p]
    assert len(missing) == 2  # referenced by train and val
    assert any("no known size" in p for p in report.problems)
