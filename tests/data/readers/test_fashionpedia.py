import json

import pytest

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.data.readers.fashionpedia import parse_fashion_file
from saip_bench.errors import DataFormatError
from tests.data.readers.builders import build_fashionpedia, fashion_release_like


def test_real_sample_categories_attributes_and_bboxes(fashion_sample):
    raw = json.loads((fashion_sample / "data" / "sample.json").read_text())
    records, meta = parse_fashion_file(fashion_sample / "data" / "sample.json", fashion_sample / "images")
    assert len(meta["categories"]) == 48 and len(meta["attributes"]) == 320  # as in this pre-release file
    assert meta["categories"][0] == raw["categories"][0] and meta["categories"][0]["id"] == 0
    assert [r["image_id"] for r in records] == [9813, 10223]
    assert records[0]["path"].endswith("images/000000009813.jpg")
    anns = [a for r in records for a in r["annotations"]]
    assert len(anns) == 12
    first = anns[0]
    assert first["id"] == 16 and first["category_id"] == 24 and first["attribute_ids"] == []
    polygon = raw["annotations"][0]["segmentation"][0]
    assert first["bbox"] == [
        min(polygon[0::2]),
        min(polygon[1::2]),
        max(polygon[0::2]) - min(polygon[0::2]),
        max(polygon[1::2]) - min(polygon[1::2]),
    ]  # no bbox in the sample: from the polygon
    with_attrs = next(a for a in anns if a["attribute_ids"])
    assert with_attrs["attribute_indices"] == [
        meta["attribute_index"][i] for i in with_attrs["attribute_ids"]
    ]


def test_release_like_non_contiguous_attribute_ids_are_remapped(tmp_path, fashion_sample):
    sample = json.loads((fashion_sample / "data" / "sample.json").read_text())
    build_fashionpedia(tmp_path, fashion_sample, fashion_release_like(sample))
    data = read_dataset("fashionpedia", tmp_path)
    index = data.meta["attribute_index"]
    assert len(index) == 294 and sorted(index.values()) == list(range(294))
    assert index[234] == 234 and index[281] == 235 and 284 not in index and index[340] == 293
    assert data.meta["num_attributes"] == 294 and len(data.meta["categories"]) == 46
    anns = [a for r in data.splits["val"] for a in r["annotations"]]
    remapped = next(a for a in anns if any(i >= 281 for i in a["attribute_ids"]))
    assert all(
        index[r] == i for r, i in zip(remapped["attribute_ids"], remapped["attribute_indices"], strict=True)
    )
    assert data.splits["val"][0]["path"] == str(
        tmp_path.resolve() / "test" / "000000009813.jpg"
    )  # val in test/
    assert data.meta["gt_files"]["val"].endswith("instances_attributes_val2020.json")
    report = verify_dataset("fashionpedia", tmp_path)
    assert sorted(report.problems) == [
        "split 'train': 2 images, expected 45623 (card fashionpedia.yaml, version 2020)",
        "split 'val': 2 images, expected 1158 (card fashionpedia.yaml, version 2020)",
    ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["annotations"][0].update(attribute_ids=[9999]), "unknown ids \\[9999\\]"),
        (lambda d: d["annotations"][0].update(category_id=99), "a 'category_id' listed in 'categories'"),
        (lambda d: d["categories"].__setitem__(0, {**d["categories"][0], "id": 48}), "0-based category ids"),
        (lambda d: d.pop("attributes"), "keys"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2]]), "polygons"),
    ],
)
def test_malformed_fashionpedia(tmp_path, fashion_sample, mutate, expected):
    data = json.loads((fashion_sample / "data" / "sample.json").read_text())
    mutate(data)
    path = tmp_path / "instances_attributes_train2020.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=expected):
        parse_fashion_file(path, tmp_path)
