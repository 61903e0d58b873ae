"""CrowdHuman (docs/formats.md#crowdhuman): ``annotation_{train,val}.odgt``, one JSON object per line.

IDs contain a comma and map to ``Images/<ID>.jpg``. ``mask`` boxes are ignore regions, not persons; a
person box with ``extra.ignore`` is ignored too (CrowdDet's rule). Image size is not in the odgt: it
comes from mmdet's ``id_hw_{split}.json`` when present, else from the image header (None if the image
is absent, which ``verify`` reports).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saip_bench.data.readers.base import (
    DatasetReader,
    ReadContext,
    as_dict,
    as_float_list,
    as_list,
    image_size,
    load_json,
    make_splits,
    require_file,
)
from saip_bench.data.records import CrowdBox, CrowdHumanRecord, DatasetSplits
from saip_bench.errors import DataFormatError


def _box(value: Any, where: str) -> CrowdBox:
    entry = as_dict(value, where, "a gtbox", ("tag", "fbox"))
    tag = entry["tag"]
    if not isinstance(tag, str) or not tag:
        raise DataFormatError(where, "'tag' as a string ('person' or 'mask')", repr(tag))
    fbox = as_float_list(entry["fbox"], where, "'fbox'", 4)
    extra = entry.get("extra", {})
    if not isinstance(extra, dict):
        raise DataFormatError(where, "'extra' as an object", repr(extra)[:80])
    ignore_flag = extra.get("ignore", 0)
    if isinstance(ignore_flag, bool) or not isinstance(ignore_flag, (int, float)):
        raise DataFormatError(where, "'extra.ignore' as 0 or 1", repr(ignore_flag))
    return {
        "fbox": fbox,
        "vbox": as_float_list(entry["vbox"], where, "'vbox'", 4) if "vbox" in entry else list(fbox),
        "hbox": as_float_list(entry["hbox"], where, "'hbox'", 4) if "hbox" in entry else list(fbox),
        "tag": tag,
        "ignore": tag != "person" or ignore_flag != 0,
    }


def parse_odgt(path: Path, image_dir: Path, sizes: dict[str, list[int]] | None) -> list[CrowdHumanRecord]:
    """One record per line; a malformed line names the file and line number."""
    require_file(path, "a CrowdHuman .odgt annotation file")
    records: list[CrowdHumanRecord] = []
    seen: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "UTF-8 text, one JSON object per line", "binary content") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DataFormatError(where, "one JSON object per line", f"malformed JSON ({exc})"[:120]) from exc
        entry = as_dict(entry, where, "a record", ("ID", "gtboxes"))
        image_id = entry["ID"]
        if not isinstance(image_id, str) or not image_id:
            raise DataFormatError(where, "'ID' as a string such as '283554,35288000868e92d4'", repr(image_id))
        if image_id in seen:
            raise DataFormatError(where, "unique IDs", f"duplicate {image_id!r}")
        seen.add(image_id)
        boxes = [
            _box(b, f"{where} gtboxes[{i}]")
            for i, b in enumerate(as_list(entry["gtboxes"], where, "'gtboxes'"))
        ]
        image_path = image_dir / f"{image_id}.jpg"
        height = width = None
        if sizes is not None and image_id in sizes:
            height, width = int(sizes[image_id][0]), int(sizes[image_id][1])
        elif image_path.exists():
            width, height = image_size(image_path)
        records.append(
            {
                "id": image_id,
                "path": str(image_path),
                "height": height,
                "width": width,
                "boxes": boxes,
            }
        )
    return records


def _load_sizes(path: Path) -> dict[str, list[int]] | None:
    if not path.exists():
        return None
    data = as_dict(load_json(path), path, "mmdet's {ID: [height, width]} map")
    for key, value in data.items():
        as_float_list(value, f"{path}: {key}", "[height, width]", 2)
    return data


class CrowdHumanReader(DatasetReader):
    name = "crowdhuman"
    wrapper_dirs = ("CrowdHuman",)

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        splits: dict[str, list[CrowdHumanRecord]] = {}
        gt_files: dict[str, str] = {}
        for split in ("train", "val"):
            path = root / f"annotation_{split}.odgt"
            splits[split] = parse_odgt(path, root / "Images", _load_sizes(root / f"id_hw_{split}.json"))
            gt_files[split] = str(path)
        meta = {
            "gt_files": gt_files,
            "image_sizes": {
                split: {r["id"]: [r["height"], r["width"]] for r in records if r["height"] is not None}
                for split, records in splits.items()
            },
            "box_field": "fbox",
        }
        return make_splits(self.name, version, root, splits, meta)

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        problems = []
        for split, records in data.splits.items():
            unknown = sum(1 for r in records if r["height"] is None)
            if unknown:
                problems.append(
                    f"{split}: {unknown} images have no known size (image missing, no id_hw_{split}.json)"
                )
        return problems
