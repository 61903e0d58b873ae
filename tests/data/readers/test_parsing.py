"""LIP and CIHP readers and the label checks they share."""

import numpy as np
import pytest
from PIL import Image

from saip_bench.data.readers import load_label, read_dataset, verify_dataset
from saip_bench.data.readers.cihp import CIHP_CLASSES
from saip_bench.data.readers.lip import LIP_CLASSES, parse_id_list
from saip_bench.errors import DataFormatError
from tests.data.readers.builders import build_cihp, build_lip, write_label


def test_real_lip_id_lists(realdata):
    lists = realdata / "lip" / "datasets" / "lip" / "list"
    train, val = parse_id_list(lists / "train_id.txt"), parse_id_list(lists / "val_id.txt")
    assert (len(train), len(val)) == (30462, 10000)
    assert val[:2] == ["100034_483681", "10005_205677"]
    assert not set(train) & set(val)
    jppnet = parse_id_list(realdata / "lip" / "datasets" / "examples" / "list" / "val.txt")
    assert jppnet[0] == "114317_456748" and len(jppnet) == 6
    assert set(jppnet) <= set(val)


def test_lip_official_layout_with_real_val_images(tmp_path, realdata):
    examples = realdata / "lip" / "datasets" / "examples" / "images"
    ids = sorted(p.stem for p in examples.glob("*.jpg"))
    build_lip(tmp_path, {"train": ["1_1"], "val": ids[:2]})
    for image_id in ids[:2]:  # real images replace the generated ones; labels written at their size
        target = tmp_path / "TrainVal_images" / "val_images" / f"{image_id}.jpg"
        target.unlink()
        target.symlink_to(examples / f"{image_id}.jpg")
        with Image.open(target) as image:
            width, height = image.size
        label = np.zeros((height, width), dtype=np.uint8)
        label[height // 4 : height // 2, :] = 5
        label[-1, -1] = 255
        write_label(
            tmp_path / "TrainVal_parsing_annotations" / "val_segmentations" / f"{image_id}.png", label
        )
    data = read_dataset("lip", tmp_path)
    assert data.version == "official"
    assert data.meta["class_names"] == list(LIP_CLASSES) and data.meta["class_names"][10] == "Jumpsuits"
    assert data.meta["ignore_index"] == 255
    record = data.splits["val"][0]
    assert record["id"] == ids[0]
    labels = load_label(record["label_path"], Image.open(record["path"]).size)
    assert set(np.unique(labels).tolist()) == {0, 5, 255}
    report = verify_dataset("lip", tmp_path, full=True)
    assert report.files_checked == 6
    assert all("expected 30462" in p or "expected 10000" in p for p in report.problems)


def test_lip_flat_schp_layout_and_lists_inside_trainval_images(tmp_path):
    build_lip(tmp_path, flat=True)
    assert read_dataset("lip", tmp_path).version == "schp"
    other = tmp_path / "official"
    build_lip(other)
    for split in ("train", "val"):
        (other / f"{split}_id.txt").rename(other / "TrainVal_images" / f"{split}_id.txt")
    data = read_dataset("lip", other)
    assert [r["id"] for r in data.splits["train"]] == ["100034_483681", "10005_205677"]
    assert verify_dataset("lip", other).available_versions == ["official"]


def test_label_checks(tmp_path):
    label = np.zeros((30, 20), dtype=np.uint8)
    path = write_label(tmp_path / "a.png", label)
    assert load_label(path, (20, 30)).shape == (30, 20)
    with pytest.raises(
        DataFormatError, match=r"a\.png: expected a label of the image's size 20x31.*found 20x30"
    ):
        load_label(path, (20, 31))
    label[0, 0] = 20
    write_label(path, label)
    with pytest.raises(DataFormatError, match=r"class ids 0\.\.19 or 255.*\[20\]"):
        load_label(path)
    Image.new("RGB", (20, 30), (255, 0, 0)).save(path)
    with pytest.raises(DataFormatError, match="mode RGB"):
        load_label(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataFormatError, match="a complete, readable label PNG"):
        load_label(path)


def test_verify_reports_wrong_size_label_and_truncated_image(tmp_path):
    build_lip(tmp_path)
    label_path = tmp_path / "TrainVal_parsing_annotations" / "train_segmentations" / "100034_483681.png"
    write_label(label_path, np.zeros((10, 10), dtype=np.uint8))
    image_path = tmp_path / "TrainVal_images" / "val_images" / "114317_456748.jpg"
    image_path.write_bytes(image_path.read_bytes()[:100])
    report = verify_dataset("lip", tmp_path, full=True)
    assert not report.usable
    broken = [p for p in report.problems if "expected 30462" not in p and "expected 10000" not in p]
    assert any(p.startswith(str(label_path)) and "20x30" in p and "found 10x10" in p for p in broken)
    assert any(p.startswith(str(image_path)) and "a complete, readable image" in p for p in broken)


def test_real_cihp_sample_in_pgn_layout(cihp_sample):
    data = read_dataset("cihp", cihp_sample)
    assert data.version == "pgn"
    ids = ["0002190", "0005008", "0012008", "0026375", "0032190"]
    assert [r["id"] for r in data.splits["train"]] == ids == [r["id"] for r in data.splits["val"]]
    assert data.meta["class_names"] == list(CIHP_CLASSES) and data.meta["class_names"][10] == "torso-skin"
    for record in data.splits["val"]:
        assert record["human_path"] is None
        labels = load_label(record["label_path"], Image.open(record["path"]).size)
        assert labels.dtype == np.uint8 and labels.max() <= 19 and labels.max() > 0
    labels = load_label(data.splits["val"][0]["label_path"])
    assert set(np.unique(labels).tolist()) == set(
        np.unique(np.asarray(Image.open(cihp_sample / "labels" / "0002190.png"))).tolist()
    )


def test_cihp_official_layout_with_id_maps(tmp_path, cihp_sample):
    build_cihp(tmp_path, cihp_sample)
    data = read_dataset("cihp", tmp_path)
    assert data.version == "official"
    assert [r["id"] for r in data.splits["train"]] == ["0002190", "0005008", "0012008"]
    record = data.splits["val"][0]
    assert record["label_path"].endswith("Validation/Category_ids/0026375.png")
    assert record["human_path"].endswith("Validation/Human_ids/0026375.png")
    report = verify_dataset("cihp", tmp_path, full=True)
    assert report.files_checked == 20
    assert [p for p in report.problems if "expected 28280" not in p and "expected 5000" not in p] == []


def test_cihp_missing_split_list(tmp_path, cihp_sample):
    build_cihp(tmp_path, cihp_sample)
    (tmp_path / "Validation" / "val_id.txt").unlink()
    with pytest.raises(DataFormatError, match=r"val_id\.txt: expected an id list.*missing split file"):
        read_dataset("cihp", tmp_path, version="official")
