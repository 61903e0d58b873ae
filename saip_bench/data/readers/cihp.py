"""CIHP multi-person parsing (docs/formats.md#cihp): the official ``instance-level_human_parsing``
layout, or CIHP_PGN's ``{images, labels, list}`` layout.

Same label convention as LIP (raw ids, 255 = ignore) but class 10 is Torso-skin, not Jumpsuits.
Official records also point at ``Human_ids`` and ``Instance_ids`` maps (None in the PGN layout).
"""

from __future__ import annotations

from pathlib import Path

from saip_bench.data.readers.base import DatasetReader, ReadContext, join_path, make_splits, require_dir
from saip_bench.data.readers.lip import (
    parse_id_list,
    parsing_file_checks,
    parsing_meta,
    split_overlap_problems,
)
from saip_bench.data.records import DatasetSplits, ParsingRecord
from saip_bench.data.vocab import CIHP_CLASSES

CIHP_SPLIT_DIRS = {"train": "Training", "val": "Validation"}


class CihpReader(DatasetReader):
    name = "cihp"
    wrapper_dirs = ("instance-level_human_parsing", "CIHP")

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        splits: dict[str, list[ParsingRecord]] = {}
        for split, folder in CIHP_SPLIT_DIRS.items():
            if version == "pgn":
                list_path = root / "list" / f"{split}_id.txt"
                image_dir, label_dir = root / "images", root / "labels"
                human_dir = instance_dir = None
            else:
                base = require_dir(root / folder, f"the CIHP {folder}/ folder")
                list_path = base / f"{split}_id.txt"
                image_dir, label_dir = base / "Images", base / "Category_ids"
                human_dir, instance_dir = base / "Human_ids", base / "Instance_ids"
            ids = parse_id_list(list_path)
            require_dir(image_dir, f"the CIHP {split} image folder")
            require_dir(label_dir, f"the CIHP {split} semantic label folder (Category_ids)")
            records: list[ParsingRecord] = []
            for image_id in ids:
                record: ParsingRecord = {
                    "id": image_id,
                    "path": join_path(image_dir, f"{image_id}.jpg"),
                    "label_path": join_path(label_dir, f"{image_id}.png"),
                    "human_path": join_path(human_dir, f"{image_id}.png") if human_dir else None,
                    "instance_path": join_path(instance_dir, f"{image_id}.png") if instance_dir else None,
                }
                records.append(record)
            splits[split] = records
        return make_splits(self.name, version, root, splits, parsing_meta(CIHP_CLASSES))

    def file_checks(self, data: DatasetSplits):
        return parsing_file_checks(data, len(CIHP_CLASSES))

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        return split_overlap_problems(data)
