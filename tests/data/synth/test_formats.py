"""Each export parses with the plain libraries and has the native structure of docs/formats.md."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from saip_bench.data.synth.vocab import COCO_KEYPOINTS, LIP_CLASSES, PA100K_ATTRIBUTES, PETA_ATTRIBUTES

MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-6])s(\d)_(\d{6})_(\d{2})\.jpg$")


def test_market1501_names_junk_and_distractors(synth_world: Path) -> None:
    root = synth_world / "market1501"
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        names = sorted(p.name for p in (root / folder).iterdir())
        assert names and all(MARKET_NAME.match(n) for n in names), folder
    gallery = [MARKET_NAME.match(p.name).group(1) for p in (root / "bounding_box_test").iterdir()]
    assert "-1" in gallery and "0000" in gallery
    query = [MARKET_NAME.match(p.name).groups()[:2] for p in (root / "query").iterdir()]
    assert len(query) == len(set(query))  # at most one query per identity and camera
    train_ids = {p.name[:4] for p in (root / "bounding_box_train").iterdir()}
    assert not train_ids & {pid for pid, _ in query}  # train and test identities are disjoint
    with Image.open(next((root / "query").iterdir())) as img:
        assert img.format == "JPEG" and img.size == (64, 128)


def test_msmt17_v2_lists(synth_world: Path) -> None:
    root = synth_world / "msmt17"
    for split, folder in (
        ("train", "mask_train_v2"),
        ("val", "mask_train_v2"),
        ("query", "mask_test_v2"),
        ("gallery", "mask_test_v2"),
    ):
        lines = (root / f"list_{split}.txt").read_text().splitlines()
        assert lines, split
        for line in lines:
            rel, pid = line.split(" ")
            assert (root / folder / rel).is_file()
            assert rel.startswith(f"{int(pid):04d}/")
            cam = int(Path(rel).name.split("_")[2])
            assert 1 <= cam <= 15


def test_cuhk_pedes_reid_raw(synth_world: Path) -> None:
    entries = json.loads((synth_world / "cuhk_pedes" / "reid_raw.json").read_text())
    assert {e["split"] for e in entries} == {"train", "val", "test"}
    for e in entries:
        assert set(e) == {"split", "captions", "file_path", "processed_tokens", "id"}
        assert (synth_world / "cuhk_pedes" / "imgs" / e["file_path"]).is_file()
        assert len(e["processed_tokens"]) == len(e["captions"]) >= 2
    train_ids = sorted({e["id"] for e in entries if e["split"] == "train"})
    assert train_ids == list(range(1, len(train_ids) + 1))  # 1-based, contiguous
    assert any(len(e["captions"]) > 2 for e in entries)
    assert {e["file_path"].split("/")[0] for e in entries} <= {
        "CUHK01",
        "CUHK03",
        "Market",
        "cam_a",
        "cam_b",
        "test_query",
        "train_query",
    }


def test_icfg_pedes_json(synth_world: Path) -> None:
    entries = json.loads((synth_world / "icfg_pedes" / "ICFG-PEDES.json").read_text())
    assert {e["split"] for e in entries} == {"train", "test"}
    train_ids = sorted({e["id"] for e in entries if e["split"] == "train"})
    assert train_ids == list(range(len(train_ids)))
    for e in entries:
        assert (synth_world / "icfg_pedes" / "imgs" / e["file_path"]).is_file()
        assert e["file_path"].split("/")[0] == e["split"]


def test_pa100k_annotation_mat(synth_world: Path) -> None:
    mat = scipy.io.loadmat(synth_world / "pa100k" / "annotation.mat")
    assert [str(a[0][0]) for a in mat["attributes"]] == PA100K_ATTRIBUTES
    for split in ("train", "val", "test"):
        labels, names = mat[f"{split}_label"], mat[f"{split}_images_name"]
        assert labels.dtype == np.uint8 and labels.shape == (len(names), 26)
        assert set(np.unique(labels)) <= {0, 1}
        assert (synth_world / "pa100k" / "data" / str(names[0][0][0])).is_file()


def test_peta_mat_and_zero_shot_pickle(synth_world: Path) -> None:
    mat = scipy.io.loadmat(synth_world / "peta" / "PETA.mat")
    peta = mat["peta"]
    assert peta.dtype.names == ("data", "attribute", "selected_attribute", "partion_attribute")
    data = peta[0][0][0]
    assert data.dtype == np.uint16 and data.shape[1] == 109
    assert list(data[:, 0]) == list(range(1, len(data) + 1))
    assert [str(a[0][0]) for a in peta[0][0][1]] == PETA_ATTRIBUTES
    assert peta[0][0][2].tolist() == [list(range(5, 40))]
    parts = peta[0][0][3]
    assert parts.shape == (5, 1)
    train = parts[0][0][0][0][0][:, 0]
    val, test = parts[0][0][0][0][1][:, 0], parts[0][0][0][0][2][:, 0]
    assert train.min() >= 1 and max(train.max(), val.max(), test.max()) <= len(data)  # 1-based
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(1, len(data) + 1))
    for row in data[:3]:
        assert (synth_world / "peta" / "images" / f"{row[0]:05d}.png").is_file()
    zs = pickle.loads((synth_world / "peta" / "dataset_zs_run0.pkl").read_bytes())
    assert type(zs) is dict and "label_idx" not in zs
    assert zs["label"].shape == (len(data), 35) and len(zs["attr_name"]) == 35
    parts_zs = zs["partition"]
    ident = data[:, 1]
    assert not set(ident[parts_zs["trainval"]]) & set(ident[parts_zs["test"]])  # identity-disjoint
    assert len(zs["weight_trainval"]) == 35


def test_coco_keypoints_json(synth_world: Path) -> None:
    from pycocotools.coco import COCO

    for split in ("train", "val"):
        path = synth_world / "coco" / "annotations" / f"person_keypoints_{split}2017.json"
        doc = json.loads(path.read_text())
        assert set(doc) == {"info", "licenses", "categories", "images", "annotations"}
        assert doc["categories"][0]["keypoints"] == COCO_KEYPOINTS
        coco = COCO(str(path))
        for ann in doc["annotations"]:
            assert len(ann["keypoints"]) == 51
            assert ann["num_keypoints"] == sum(1 for v in ann["keypoints"][2::3] if v > 0)
            assert coco.annToMask(ann).sum() > 0
        for img in doc["images"]:
            assert (synth_world / "coco" / f"{split}2017" / img["file_name"]).is_file()
    anns = [
        a
        for s in ("train", "val")
        for a in json.loads(
            (synth_world / "coco" / "annotations" / f"person_keypoints_{s}2017.json").read_text()
        )["annotations"]
    ]
    assert any(a["iscrowd"] == 1 for a in anns) and any(a["num_keypoints"] == 0 for a in anns)
    dets = json.loads(
        (
            synth_world / "coco" / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
        ).read_text()
    )
    assert dets and set(dets[0]) == {"bbox", "category_id", "image_id", "score"}


def test_coco_wholebody_fields(synth_world: Path) -> None:
    doc = json.loads(
        (synth_world / "coco_wholebody" / "annotations" / "coco_wholebody_val_v1.0.json").read_text()
    )
    sizes = {"foot": 6, "face": 68, "lefthand": 21, "righthand": 21}
    seen_valid = {k: False for k in sizes}
    for ann in doc["annotations"]:
        for part, n in sizes.items():
            kpts = ann[f"{part}_kpts"]
            assert len(kpts) == 3 * n
            assert isinstance(ann[f"{part}_valid"], bool)
            seen_valid[part] |= ann[f"{part}_valid"]
            if part != "foot":
                box = ann[f"{part}_box"]
                assert (box == [0.0, 0.0, 0.0, 0.0]) == (not ann[f"{part}_valid"])
                assert all(isinstance(v, float) for v in kpts[2::3])  # face/hand visibilities are floats
    assert seen_valid["face"] and seen_valid["foot"] and (seen_valid["lefthand"] or seen_valid["righthand"])


def test_lip_and_cihp_label_pngs(synth_world: Path) -> None:
    lip = synth_world / "lip"
    for split in ("train", "val"):
        ids = (lip / f"{split}_id.txt").read_text().split()
        assert ids
        for ident in ids[:4]:
            label = Image.open(
                lip / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{ident}.png"
            )
            image = Image.open(lip / "TrainVal_images" / f"{split}_images" / f"{ident}.jpg")
            assert label.mode == "L" and label.size == image.size
            assert int(np.asarray(label).max()) < len(LIP_CLASSES)
    cihp = synth_world / "cihp"
    for folder, lst in (("Training", "train_id.txt"), ("Validation", "val_id.txt")):
        for ident in (cihp / folder / lst).read_text().split():
            cat = np.asarray(Image.open(cihp / folder / "Category_ids" / f"{ident}.png"))
            human = np.asarray(Image.open(cihp / folder / "Human_ids" / f"{ident}.png")).astype(int)
            inst = np.asarray(Image.open(cihp / folder / "Instance_ids" / f"{ident}.png")).astype(int)
            assert ((cat > 0) == (human > 0)).all()
            fg = cat > 0
            assert (inst[fg] == cat[fg] + 20 * (human[fg] - 1)).all() and (inst[~fg] == 0).all()
            assert sorted(set(np.unique(human)) - {0}) == list(range(1, human.max() + 1))


def test_crowdhuman_odgt(synth_world: Path) -> None:
    root = synth_world / "crowdhuman"
    n_mask = 0
    for split in ("train", "val"):
        for line in (root / f"annotation_{split}.odgt").read_text().splitlines():
            rec = json.loads(line)
            assert "," in rec["ID"] and (root / "Images" / f"{rec['ID']}.jpg").is_file()
            for box in rec["gtboxes"]:
                assert box["tag"] in ("person", "mask")
                if box["tag"] == "mask":
                    n_mask += 1
                    assert box["extra"] == {"ignore": 1} and box["head_attr"] == {}
                else:
                    assert set(box["head_attr"]) == {"ignore", "occ", "unsure"}
                    fx, fy, fw, fh = box["fbox"]
                    for inner in (box["vbox"], box["hbox"]):
                        x, y, w, h = inner
                        assert fx <= x and fy <= y and x + w <= fx + fw and y + h <= fy + fh
    assert n_mask > 0


def test_fashionpedia_json(synth_world: Path) -> None:
    root = synth_world / "fashionpedia"
    for split, folder in (("train", "train"), ("val", "test")):
        doc = json.loads((root / f"instances_attributes_{split}2020.json").read_text())
        assert [c["id"] for c in doc["categories"]] == list(range(46))
        ids = [a["id"] for a in doc["attributes"]]
        assert len(ids) == 294 and 234 in ids and 235 not in ids and 281 in ids and 284 not in ids
        valid = set(ids)
        assert doc["annotations"]
        for ann in doc["annotations"]:
            assert 0 <= ann["category_id"] <= 45 and set(ann["attribute_ids"]) <= valid
        assert any(a["attribute_ids"] and max(a["attribute_ids"]) > 281 for a in doc["annotations"])
        for img in doc["images"]:
            assert (root / folder / img["file_name"]).is_file()


def test_pretrain_folder(synth_world: Path) -> None:
    root = synth_world / "pretrain"
    kps = json.loads((root / "keypoints.json").read_text())
    images = sorted(str(p.relative_to(root)) for p in (root / "images").rglob("*.jpg"))
    assert sorted(kps) == images and len({Path(p).parent.name for p in images}) > 2
    for rel, points in list(kps.items())[:5]:
        assert len(points) == 17 and all(len(p) == 3 and p[2] in (0, 1, 2) for p in points)
        w, h = Image.open(root / rel).size
        assert all(0 <= x < w and 0 <= y < h for x, y, v in points if v > 0)
    assert list((root / "backgrounds").glob("*.jpg"))
