import json

import pytest

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.data.readers.coco_kpt import COCO_KEYPOINTS, COCO_SIGMAS, parse_keypoint_file, part_slices
from saip_bench.errors import DataFormatError
from tests.data.readers.builders import build_coco, build_coco_wholebody, wholebody_from_coco


def test_real_coco_sample_values(coco_sample):
    records, person = parse_keypoint_file(coco_sample / "test_coco.json", coco_sample)
    raw = json.loads((coco_sample / "test_coco.json").read_text())
    assert [r["image_id"] for r in records] == [785, 40083, 196141, 197388]
    assert sum(len(r["annotations"]) for r in records) == 14
    first = records[0]
    assert (first["width"], first["height"]) == (640, 425)
    assert first["path"].endswith("000000000785.jpg")
    ann = first["annotations"][0]
    assert ann["id"] == 442619 and ann["num_keypoints"] == 17 and ann["iscrowd"] == 0
    assert ann["keypoints"][:6] == [367, 81, 2, 374, 73, 2]
    assert ann["bbox"] == [280.79, 44.73, 218.7, 346.68] and ann["area"] == pytest.approx(27789.11055)
    zero = [a for r in records for a in r["annotations"] if a["num_keypoints"] == 0]
    assert len(zero) == 2  # kept: the metric ignores them, training filters them
    by_id = {a["id"]: a for a in raw["annotations"]}
    for r in records:
        for a in r["annotations"]:
            assert a["keypoints"] == by_id[a["id"]]["keypoints"]
    assert person["keypoints"] == list(COCO_KEYPOINTS)


def test_coco_root_meta_and_gt_files(tmp_path, coco_sample):
    build_coco(tmp_path, coco_sample)
    data = read_dataset("coco", tmp_path)
    assert data.meta["sigmas"] == pytest.approx(
        [
            s / 10
            for s in (
                0.26,
                0.25,
                0.25,
                0.35,
                0.35,
                0.79,
                0.79,
                0.72,
                0.72,
                0.62,
                0.62,
                1.07,
                1.07,
                0.87,
                0.87,
                0.89,
                0.89,
            )
        ]
    )
    assert len(COCO_SIGMAS) == 17
    assert data.meta["gt_files"]["val"] == str(
        tmp_path.resolve() / "annotations" / "person_keypoints_val2017.json"
    )
    assert data.meta["skeleton"][0] == [16, 14]
    assert data.counts()["val"] == {"images": 4, "annotations": 14}
    assert "detection_files" not in data.meta
    detections = tmp_path / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
    detections.parent.mkdir()
    detections.symlink_to(coco_sample / "test_coco_det_AP_H_56.json")
    assert read_dataset("coco", tmp_path).meta["detection_files"] == {"val": str(detections)}
    report = verify_dataset("coco", tmp_path, full=True)
    assert report.files_checked == 8
    assert report.problems == [
        "split 'train': 4 images, expected 118287 (card coco.yaml, version 2017)",
        "split 'train': 14 annotations, expected 262465 (card coco.yaml, version 2017)",
        "split 'val': 4 images, expected 5000 (card coco.yaml, version 2017)",
        "split 'val': 14 annotations, expected 11004 (card coco.yaml, version 2017)",
    ]


def test_wholebody_concatenates_133_points_in_part_order(tmp_path, coco_sample):
    build_coco_wholebody(tmp_path, coco_sample)
    data = read_dataset("coco_wholebody", tmp_path)
    raw = wholebody_from_coco(coco_sample)["annotations"]
    ann = data.splits["val"][0]["annotations"][0]
    assert len(ann["keypoints"]) == 133 * 3
    slices = part_slices()
    assert slices == {
        "body": (0, 17),
        "foot": (17, 23),
        "face": (23, 91),
        "lefthand": (91, 112),
        "righthand": (112, 133),
    }
    assert ann["keypoints"][: 17 * 3] == raw[0]["keypoints"]
    assert ann["keypoints"][17 * 3 : 23 * 3] == raw[0]["foot_kpts"]
    assert ann["keypoints"][23 * 3 : 91 * 3] == raw[0]["face_kpts"]
    assert ann["keypoints"][112 * 3 :] == raw[0]["righthand_kpts"]
    assert isinstance(ann["keypoints"][23 * 3 + 2], float)  # face visibility stays a float flag
    assert ann["parts_valid"] == {"foot": True, "face": True, "lefthand": False, "righthand": False}
    assert ann["part_boxes"]["lefthand_box"] == [0.0, 0.0, 0.0, 0.0]
    assert len(data.meta["sigmas"]) == 133 and data.meta["sigmas"][23] == 0.042
    assert data.meta["sigmas"][91:112] == data.meta["sigmas"][112:133]


def test_wholebody_missing_part_field(tmp_path, coco_sample):
    bad = wholebody_from_coco(coco_sample)
    del bad["annotations"][3]["face_kpts"]
    build_coco(tmp_path, coco_sample, bad)
    with pytest.raises(DataFormatError, match=r"annotations\[3\].*'face_kpts'"):
        read_dataset("coco_wholebody", tmp_path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["annotations"][0].update(keypoints=[0] * 50), "'keypoints' as a list of 51 numbers"),
        (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3), "visibility 0, 1 or 2"),
        (lambda d: d["annotations"][0].update(image_id=1), "an 'image_id' listed in 'images'"),
        (lambda d: d["annotations"][0].pop("num_keypoints"), "keys"),
        (lambda d: d["images"][0].update(width="640"), "'width' as an integer"),
        (lambda d: d.pop("categories"), "keys"),
    ],
)
def test_malformed_coco_annotation(tmp_path, coco_sample, mutate, expected):
    data = json.loads((coco_sample / "test_coco.json").read_text())
    mutate(data)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=expected):
        parse_keypoint_file(path, tmp_path)
