"""Tiny dataset roots written by hand in each native format (docs/formats.md), for reader tests.

Each ``build_<name>(root)`` writes a complete minimal root and returns the annotation file that the
fuzz test corrupts. Real samples from ``shared/realdata`` are used where they exist (PETA.mat, COCO,
LIP lists, CIHP labels, Fashionpedia); the rest are written here to the letter of docs/formats.md.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def write_jpg(path: Path, size: tuple[int, int] = (16, 32), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path, "JPEG")
    return path


def write_png(path: Path, size: tuple[int, int] = (16, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path, "PNG")
    return path


def write_label(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)
    return path


def build_market1501(root: Path) -> Path:
    names = {
        "bounding_box_train": [
            "0002_c1s1_000451_03.jpg",
            "0002_c2s1_000301_01.jpg",
            "0007_c3s3_077419_03.jpg",
        ],
        "query": ["0001_c1s1_001051_00.jpg", "0003_c4s1_000001_00.jpg"],
        "bounding_box_test": [
            "0001_c2s1_000301_01.jpg",
            "0001_c1s1_001052_00.jpg",
            "0003_c1s1_000002_00.jpg",
            "0000_c1s1_000003_01.jpg",
            "-1_c3s1_000004_01.jpg",
            "-1_c1s1_000005_02.jpg",
        ],
    }
    for folder, files in names.items():
        for name in files:
            write_jpg(root / folder / name)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0\1")
    return root / "query" / names["query"][0]


def build_msmt17(root: Path, version: str = "v2") -> Path:
    train_dir, test_dir = ("mask_train_v2", "mask_test_v2") if version == "v2" else ("train", "test")
    lists = {
        "list_train.txt": (
            train_dir,
            [
                ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                ("0000/0000_001_05_0303noon_0016_1.jpg", 0),
                ("0001/0001_000_15_0303afternoon_0040_0.jpg", 1),
            ],
        ),
        "list_val.txt": (train_dir, [("0002/0002_000_02_0303morning_0101_0.jpg", 2)]),
        "list_query.txt": (test_dir, [("0000/0000_000_03_0114morning_0011_0.jpg", 0)]),
        "list_gallery.txt": (
            test_dir,
            [("0000/0000_001_09_0114noon_0012_0.jpg", 0), ("0001/0001_000_12_0114noon_0013_0.jpg", 1)],
        ),
    }
    for list_name, (folder, entries) in lists.items():
        for rel, _ in entries:
            write_jpg(root / folder / rel)
        (root / list_name).write_text("\n".join(f"{rel} {pid}" for rel, pid in entries) + "\n")
    return root / "list_query.txt"


PEDES_ENTRIES = [
    {
        "split": "train",
        "captions": ["A man in a red coat.", "He wears red.", "Red coat, black shoes."],
        "file_path": "CUHK01/0363004.png",
        "processed_tokens": [["a", "man"]],
        "id": 1,
    },
    {
        "split": "train",
        "captions": ["A woman with a bag."],
        "file_path": "Market/0002_c1s1_0001.jpg",
        "processed_tokens": [["a"]],
        "id": 2,
    },
    {"split": "val", "captions": ["Blue shirt.", "Blue top."], "file_path": "cam_a/001_45.bmp", "id": 12004},
    {
        "split": "test",
        "captions": ["Green pants.", "Green trousers."],
        "file_path": "test_query/p10376_s14337.jpg",
        "id": 13003,
    },
]


def build_cuhk_pedes(root: Path) -> Path:
    for entry in PEDES_ENTRIES:
        write_jpg(root / "imgs" / entry["file_path"])
    path = root / "reid_raw.json"
    path.write_text(json.dumps(PEDES_ENTRIES))
    return path


def build_icfg_pedes(root: Path) -> Path:
    entries = [
        {
            "split": "train",
            "captions": ["A man in grey."],
            "file_path": "train/0000/0000_000_01_0303morning_0015_0.jpg",
            "processed_tokens": [["a"]],
            "id": 0,
        },
        {
            "split": "train",
            "captions": ["A girl in pink."],
            "file_path": "train/0001/0001_000_02_0303noon_0001_0.jpg",
            "processed_tokens": [["a"]],
            "id": 1,
        },
        {
            "split": "test",
            "captions": ["A boy in black."],
            "file_path": "test/3102/3102_000_03_0113noon_0001_0.jpg",
            "processed_tokens": [["a"]],
            "id": 3102,
        },
    ]
    for entry in entries:
        write_jpg(root / "imgs" / entry["file_path"])
    path = root / "ICFG-PEDES.json"
    path.write_text(json.dumps(entries))
    return path


PA100K_NAMES = (
    "Female",
    "AgeOver60",
    "Age18-60",
    "AgeLess18",
    "Front",
    "Side",
    "Back",
    "Hat",
    "Glasses",
    "HandBag",
    "ShoulderBag",
    "Backpack",
    "HoldObjectsInFront",
    "ShortSleeve",
    "LongSleeve",
    "UpperStride",
    "UpperLogo",
    "UpperPlaid",
    "UpperSplice",
    "LowerStripe",
    "LowerPattern",
    "LongCoat",
    "Trousers",
    "Shorts",
    "Skirt&Dress",
    "boots",
)


def cell(strings: list[str] | tuple[str, ...]) -> np.ndarray:
    """An N x 1 MATLAB cell of strings (read back as ``[i][0][0]``)."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, text in enumerate(strings):
        out[i, 0] = np.array([text])
    return out


def pa100k_variables(sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    sizes = sizes or {"train": 4, "val": 2, "test": 2}
    rng = np.random.default_rng(0)
    variables: dict[str, np.ndarray] = {"attributes": cell(PA100K_NAMES)}
    start = 1
    for split, count in sizes.items():
        variables[f"{split}_images_name"] = cell([f"{i:06d}.jpg" for i in range(start, start + count)])
        variables[f"{split}_label"] = rng.integers(0, 2, size=(count, 26)).astype(np.uint8)
        start += count
    return variables


def build_pa100k(root: Path, variables: dict[str, np.ndarray] | None = None) -> Path:
    variables = variables or pa100k_variables()
    for split in ("train", "val", "test"):
        key = f"{split}_images_name"
        if key in variables:
            for item in variables[key].reshape(-1):
                write_jpg(root / "data" / str(item[0]))
    path = root / "annotation.mat"
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), variables)
    return path


def build_peta(root: Path, real_mat: Path) -> Path:
    """The real PETA.mat (19,000 rows) with images for every row written as tiny PNGs."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(real_mat, root / "PETA.mat")
    images = root / "images"
    images.mkdir()
    template = write_png(root / "template.png", (8, 16))
    for index in range(1, 19001):  # hard links: 19,000 files in well under a second
        os.link(template, images / f"{index:05d}.png")
    template.unlink()
    return root / "PETA.mat"


def build_coco(root: Path, real_dir: Path, wholebody_json: dict | None = None) -> Path:
    """COCO layout from the real 4-image sample (used as val and as train)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    data = json.loads((real_dir / "test_coco.json").read_text())
    for split in ("train", "val"):
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        for image in data["images"]:
            (folder / image["file_name"]).symlink_to(real_dir / image["file_name"])
        if wholebody_json is None:
            shutil.copy(
                real_dir / "test_coco.json", root / "annotations" / f"person_keypoints_{split}2017.json"
            )
        else:
            (root / "annotations" / f"coco_wholebody_{split}_v1.0.json").write_text(
                json.dumps(wholebody_json)
            )
    name = "person_keypoints_val2017.json" if wholebody_json is None else "coco_wholebody_val_v1.0.json"
    return root / "annotations" / name


def wholebody_from_coco(real_dir: Path) -> dict:
    """COCO-WholeBody v1.0 fields added to the real COCO annotations: feet 0/1/2, face and hands float
    flags, zero boxes for absent parts (FORMATS §8)."""
    data = json.loads((real_dir / "test_coco.json").read_text())
    for k, ann in enumerate(data["annotations"]):
        ann["foot_kpts"] = [float(10 + i) if i % 3 != 2 else 2 for i in range(18)]
        ann["face_kpts"] = [float(i) if i % 3 != 2 else 1.0 for i in range(204)]
        ann["lefthand_kpts"] = [0.0] * 63
        ann["righthand_kpts"] = [float(i) if i % 3 != 2 else 1.0 for i in range(63)] if k % 2 else [0.0] * 63
        ann["face_box"] = [1.0, 2.0, 30.0, 40.0]
        ann["lefthand_box"] = [0.0, 0.0, 0.0, 0.0]
        ann["righthand_box"] = [5.0, 5.0, 20.0, 20.0] if k % 2 else [0.0, 0.0, 0.0, 0.0]
        ann["face_valid"], ann["lefthand_valid"] = True, False
        ann["righthand_valid"], ann["foot_valid"] = bool(k % 2), True
    return data


def build_coco_wholebody(root: Path, real_dir: Path) -> Path:
    return build_coco(root, real_dir, wholebody_from_coco(real_dir))


def build_lip(root: Path, ids: dict[str, list[str]] | None = None, flat: bool = False) -> Path:
    ids = ids or {"train": ["100034_483681", "10005_205677"], "val": ["114317_456748"]}
    for split, split_ids in ids.items():
        image_dir = root / (f"{split}_images" if flat else f"TrainVal_images/{split}_images")
        label_dir = root / (
            f"{split}_segmentations" if flat else f"TrainVal_parsing_annotations/{split}_segmentations"
        )
        for n, image_id in enumerate(split_ids):
            write_jpg(image_dir / f"{image_id}.jpg", (20, 30))
            label = np.zeros((30, 20), dtype=np.uint8)
            label[5:25, 5:15] = 10 + n
            label[0, 0] = 255
            write_label(label_dir / f"{image_id}.png", label)
        (root / f"{split}_id.txt").write_text("\n".join(split_ids))
    return root / "train_id.txt"


def build_cihp(root: Path, real_cihp: Path) -> Path:
    """Official layout from the real CIHP sample (images + Category_ids labels) plus id maps."""
    ids = sorted(p.stem for p in (real_cihp / "images").glob("*.jpg"))
    splits = {"Training": ("train", ids[:3]), "Validation": ("val", ids[3:])}
    for folder, (split, split_ids) in splits.items():
        base = root / folder
        for sub in ("Images", "Category_ids", "Human_ids", "Instance_ids"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for image_id in split_ids:
            shutil.copy(real_cihp / "images" / f"{image_id}.jpg", base / "Images" / f"{image_id}.jpg")
            shutil.copy(real_cihp / "labels" / f"{image_id}.png", base / "Category_ids" / f"{image_id}.png")
            with Image.open(real_cihp / "labels" / f"{image_id}.png") as label:
                humans = (np.asarray(label) > 0).astype(np.uint8)
            Image.fromarray(humans, mode="L").save(base / "Human_ids" / f"{image_id}.png")
            Image.fromarray(humans * 2, mode="L").save(base / "Instance_ids" / f"{image_id}.png")
        (base / f"{split}_id.txt").write_text("\n".join(split_ids))
    return root / "Training" / "train_id.txt"


CROWD_LINE = {
    "ID": "283554,35288000868e92d4",
    "gtboxes": [
        {
            "tag": "person",
            "fbox": [-5, 10, 40, 90],
            "vbox": [0, 10, 30, 80],
            "hbox": [10, 10, 10, 12],
            "extra": {"box_id": 0, "occ": 1},
            "head_attr": {"ignore": 0, "occ": 0, "unsure": 0},
        },
        {
            "tag": "person",
            "fbox": [50, 10, 20, 60],
            "vbox": [50, 10, 20, 60],
            "hbox": [55, 10, 8, 9],
            "extra": {"box_id": 1, "occ": 0, "ignore": 1},
            "head_attr": {"ignore": 1, "occ": 0, "unsure": 0},
        },
        {
            "tag": "mask",
            "fbox": [70, 0, 30, 40],
            "vbox": [70, 0, 30, 40],
            "hbox": [70, 0, 30, 40],
            "extra": {"ignore": 1},
            "head_attr": {},
        },
    ],
}


def build_crowdhuman(root: Path) -> Path:
    second = {"ID": "284193,faa9000f2678b5e", "gtboxes": [CROWD_LINE["gtboxes"][0]]}
    write_jpg(root / "Images" / f"{CROWD_LINE['ID']}.jpg", (120, 100))
    write_jpg(root / "Images" / f"{second['ID']}.jpg", (64, 48))
    (root / "annotation_train.odgt").write_text(json.dumps(CROWD_LINE) + "\n" + json.dumps(second) + "\n")
    (root / "annotation_val.odgt").write_text(json.dumps(second) + "\n")
    return root / "annotation_train.odgt"


def fashion_release_like(sample: dict) -> dict:
    """The sample with the release's 46 categories and non-contiguous attribute ids (234 -> 281, no 284)."""
    data = json.loads(json.dumps(sample))
    data["categories"] = [c for c in data["categories"] if c["id"] < 46]
    raw_ids = [i for i in range(0, 341) if not (235 <= i <= 280) and i != 284][:294]
    old_to_new = {a["id"]: raw_ids[i] for i, a in enumerate(data["attributes"][:294])}
    data["attributes"] = [{**a, "id": old_to_new[a["id"]]} for a in data["attributes"][:294]]
    for ann in data["annotations"]:
        ann["attribute_ids"] = [old_to_new[a] for a in ann["attribute_ids"] if a in old_to_new]
        ann["category_id"] = min(ann["category_id"], 45)
    return data


def build_fashionpedia(root: Path, real_dir: Path, data: dict | None = None) -> Path:
    data = data if data is not None else json.loads((real_dir / "data" / "sample.json").read_text())
    root.mkdir(parents=True, exist_ok=True)
    for split, folder in (("train", "train"), ("val", "test")):
        (root / folder).mkdir(exist_ok=True)
        for image in data["images"]:
            (root / folder / image["file_name"]).symlink_to(real_dir / "images" / image["file_name"])
        (root / f"instances_attributes_{split}2020.json").write_text(json.dumps(data))
    return root / "instances_attributes_train2020.json"


def build_peta_small(root: Path, real_mat: Path, rows: int = 30) -> Path:
    """A PETA.mat with the real schema and the first ``rows`` rows of the real file (1-based partitions)."""
    struct = scipy.io.loadmat(str(real_mat))["peta"][0][0]
    partitions = np.empty((5, 1), dtype=[("train", "O"), ("val", "O"), ("test", "O")])
    cut = (rows // 2, rows * 3 // 4)
    for k in range(5):
        order = np.roll(np.arange(1, rows + 1), k)
        partitions[k, 0] = (
            order[: cut[0]].reshape(-1, 1).astype(float),
            order[cut[0] : cut[1]].reshape(-1, 1).astype(float),
            order[cut[1] :].reshape(-1, 1).astype(float),
        )
    peta = {
        "data": struct["data"][:rows],
        "attribute": struct["attribute"],
        "selected_attribute": struct["selected_attribute"],
        "partion_attribute": partitions,
    }
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(root / "PETA.mat"), {"peta": peta})
    for index in range(1, rows + 1):
        write_png(root / "images" / f"{index:05d}.png", (8, 16))
    return root / "PETA.mat"
