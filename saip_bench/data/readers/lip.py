"""LIP single-person parsing (docs/formats.md#lip): official ``TrainVal_*`` layout or SCHP's flat one.

Records are ``{id, path, label_path}``; labels are single-channel PNGs of raw class ids 0-19 with 255 =
ignore, opened (and checked against the image size) by ``load_label`` when a task needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from saip_bench.data.readers.base import (
    DatasetReader,
    FileCheck,
    ReadContext,
    join_path,
    make_splits,
    read_text_lines,
    require_dir,
)
from saip_bench.data.records import DatasetSplits, ParsingRecord
from saip_bench.data.vocab import LIP_CLASSES
from saip_bench.errors import DataFormatError

PARSING_FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))  # left/right swapped under horizontal flip
LIP_LAYOUTS = {
    "official": {
        "images": "TrainVal_images/{split}_images",
        "labels": "TrainVal_parsing_annotations/{split}_segmentations",
        "list": "{split}_id.txt",
    },
    "schp": {"images": "{split}_images", "labels": "{split}_segmentations", "list": "{split}_id.txt"},
}


def parse_id_list(path: Path) -> list[str]:
    """One id per line (``100034_483681``); JPPNet-style ``/images/<id>.jpg`` lines are accepted too."""
    ids = []
    for number, line in enumerate(read_text_lines(path, "an id list (one image id per line)"), start=1):
        token = line.split()[0]
        token = Path(token).stem if "/" in token or token.endswith((".jpg", ".png")) else token
        if not token or any(c.isspace() for c in token):
            raise DataFormatError(f"{path}:{number}", "one image id per line", repr(line[:80]))
        ids.append(token)
    if len(set(ids)) != len(ids):
        raise DataFormatError(path, "unique ids", f"{len(ids) - len(set(ids))} duplicates")
    return ids


def parsing_meta(classes: tuple[str, ...]) -> dict:
    return {
        "class_names": list(classes),
        "num_classes": len(classes),
        "ignore_index": 255,
        "flip_pairs": [list(pair) for pair in PARSING_FLIP_PAIRS],
    }


def split_overlap_problems(data: DatasetSplits) -> list[str]:
    """The same image id in train and val means the lists are not the official split."""
    ids = {split: {r["id"] for r in records} for split, records in data.splits.items()}
    shared = ids.get("train", set()) & ids.get("val", set())
    if shared:
        return [f"train and val lists share {len(shared)} image ids (e.g. {sorted(shared)[:3]})"]
    return []


def parsing_file_checks(data: DatasetSplits, num_classes: int):
    for records in data.splits.values():
        for record in records:
            yield FileCheck(record["path"], "image")
            if record.get("label_path"):
                yield FileCheck(record["label_path"], "label", image=record["path"], num_classes=num_classes)
            for key in ("human_path", "instance_path"):
                if record.get(key):
                    yield FileCheck(record[key], "id_map", image=record["path"])


class LipReader(DatasetReader):
    name = "lip"
    wrapper_dirs = ("LIP",)
    # The official archives put the id lists inside TrainVal_images/ in some copies.
    layout_alternatives: ClassVar[dict[str, tuple[str, ...]]] = {
        "train_id.txt": ("TrainVal_images/train_id.txt",),
        "val_id.txt": ("TrainVal_images/val_id.txt",),
    }

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        layout = LIP_LAYOUTS[version]
        splits: dict[str, list[ParsingRecord]] = {}
        for split in ("train", "val"):
            list_path = root / layout["list"].format(split=split)
            if not list_path.exists() and (root / "TrainVal_images" / list_path.name).exists():
                list_path = root / "TrainVal_images" / list_path.name
            ids = parse_id_list(list_path)
            image_dir = require_dir(
                root / layout["images"].format(split=split), f"the LIP {split} image folder"
            )
            label_dir = require_dir(
                root / layout["labels"].format(split=split), f"the LIP {split} label folder"
            )
            splits[split] = [
                {
                    "id": image_id,
                    "path": join_path(image_dir, f"{image_id}.jpg"),
                    "label_path": join_path(label_dir, f"{image_id}.png"),
                }
                for image_id in ids
            ]
        return make_splits(self.name, version, root, splits, parsing_meta(LIP_CLASSES))

    def file_checks(self, data: DatasetSplits):
        return parsing_file_checks(data, len(LIP_CLASSES))

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        return split_overlap_problems(data)
