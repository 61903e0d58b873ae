"""Fashionpedia (docs/formats.md#fashionpedia): ``instances_attributes_{train,val}2020.json``.

Category ids are 0-based (unlike COCO) and kept as in the file. Attribute ids are not contiguous in the
release (234 -> 281, 284 missing), so they are mapped to 0..A-1 through the file's own ``attributes``
list (``meta['attribute_index']``: raw id -> index); annotations keep both the raw ids and the
indices. Val images live in ``test/``. A missing ``bbox`` (as in the API's sample) is derived from the
segmentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saip_bench.data.readers.base import (
    DatasetReader,
    ReadContext,
    as_dict,
    as_float_list,
    as_int,
    as_list,
    join_path,
    load_json,
    make_splits,
)
from saip_bench.data.records import DatasetSplits, FashionAnnotation, FashionImageRecord
from saip_bench.errors import DataFormatError

FASHION_SPLITS = {
    "train": ("instances_attributes_train2020.json", "train"),
    "val": ("instances_attributes_val2020.json", "test"),
}
# FPParams.catsWithAttributes and the reporting super-classes (fashionpedia-api).
CATS_WITH_ATTRIBUTES = (10, 7, 0, 6, 5, 4, 9, 31, 33, 3, 12, 11, 1, 2, 8, 32, 29, 28)
SUPER_CLASSES = {"outerwear": (0, 12), "accessory": (13, 26), "part": (27, 45)}  # inclusive id ranges


def _bbox_from_segmentation(segmentation: Any, height: int, width: int, where: str) -> list[float]:
    if isinstance(segmentation, list) and segmentation:
        coords = [c for poly in segmentation if isinstance(poly, list) for c in poly]
        points = as_float_list(coords, where, "'segmentation' polygons")
        if len(points) < 6 or len(points) % 2:
            raise DataFormatError(where, "'segmentation' polygons of x, y pairs", f"{len(points)} numbers")
        xs, ys = points[0::2], points[1::2]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        from pycocotools import mask as mask_utils

        rle = dict(segmentation)
        try:
            if isinstance(rle["counts"], list):
                rle = mask_utils.frPyObjects(rle, *rle["size"])
            return [float(v) for v in np.asarray(mask_utils.toBbox(rle)).reshape(-1)[:4]]
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise DataFormatError(where, "'segmentation' as a valid RLE", str(exc)) from exc
    raise DataFormatError(where, "a 'bbox' or a polygon / RLE 'segmentation'", repr(segmentation)[:80])


def parse_fashion_file(json_path: Path, image_dir: Path) -> tuple[list[FashionImageRecord], dict[str, Any]]:
    data = as_dict(
        load_json(json_path),
        json_path,
        "a Fashionpedia annotation file",
        ("images", "annotations", "categories", "attributes"),
    )
    categories = []
    for index, value in enumerate(as_list(data["categories"], json_path, "'categories'")):
        entry = as_dict(value, f"{json_path}: categories[{index}]", "a category", ("id", "name"))
        categories.append({**entry, "id": as_int(entry["id"], f"{json_path}: categories[{index}]", "'id'")})
    category_ids = {c["id"] for c in categories}
    if categories and min(category_ids) != 0:
        raise DataFormatError(
            json_path, "0-based category ids (Fashionpedia, unlike COCO)", f"smallest id {min(category_ids)}"
        )
    attributes = []
    for index, value in enumerate(as_list(data["attributes"], json_path, "'attributes'")):
        entry = as_dict(value, f"{json_path}: attributes[{index}]", "an attribute", ("id", "name"))
        attributes.append({**entry, "id": as_int(entry["id"], f"{json_path}: attributes[{index}]", "'id'")})
    attributes.sort(key=lambda a: a["id"])
    attribute_index = {a["id"]: i for i, a in enumerate(attributes)}
    if len(attribute_index) != len(attributes):
        raise DataFormatError(json_path, "unique attribute ids", "duplicates")

    images: dict[int, FashionImageRecord] = {}
    for index, value in enumerate(as_list(data["images"], json_path, "'images'")):
        where = f"{json_path}: images[{index}]"
        entry = as_dict(value, where, "an image", ("id", "file_name", "width", "height"))
        if not isinstance(entry["file_name"], str) or not entry["file_name"]:
            raise DataFormatError(where, "'file_name' as a string", repr(entry["file_name"]))
        image_id = as_int(entry["id"], where, "'id'")
        images[image_id] = {
            "image_id": image_id,
            "path": join_path(image_dir, entry["file_name"]),
            "width": as_int(entry["width"], where, "'width'"),
            "height": as_int(entry["height"], where, "'height'"),
            "annotations": [],
        }
    for index, value in enumerate(as_list(data["annotations"], json_path, "'annotations'")):
        where = f"{json_path}: annotations[{index}]"
        entry = as_dict(value, where, "an annotation", ("id", "image_id", "category_id", "segmentation"))
        image_id = as_int(entry["image_id"], where, "'image_id'")
        if image_id not in images:
            raise DataFormatError(where, "an 'image_id' listed in 'images'", str(image_id))
        category_id = as_int(entry["category_id"], where, "'category_id'")
        if category_id not in category_ids:
            raise DataFormatError(
                where,
                f"a 'category_id' listed in 'categories' (0..{max(category_ids, default=0)})",
                str(category_id),
            )
        raw_ids = [
            as_int(a, where, "'attribute_ids'")
            for a in as_list(entry.get("attribute_ids", []), where, "'attribute_ids'")
        ]
        unknown = [a for a in raw_ids if a not in attribute_index]
        if unknown:
            raise DataFormatError(
                where, "'attribute_ids' listed in the file's 'attributes'", f"unknown ids {unknown}"
            )
        image = images[image_id]
        bbox = (
            as_float_list(entry["bbox"], where, "'bbox'", 4)
            if "bbox" in entry
            else _bbox_from_segmentation(entry["segmentation"], image["height"], image["width"], where)
        )
        annotation: FashionAnnotation = {
            "id": as_int(entry["id"], where, "'id'"),
            "category_id": category_id,
            "attribute_ids": raw_ids,
            "attribute_indices": [attribute_index[a] for a in raw_ids],
            "bbox": bbox,
            "area": as_float_list([entry.get("area", bbox[2] * bbox[3])], where, "'area'", 1)[0],
            "iscrowd": as_int(entry.get("iscrowd", 0), where, "'iscrowd'"),
            "segmentation": entry["segmentation"],
        }
        image["annotations"].append(annotation)
    meta = {"categories": categories, "attributes": attributes, "attribute_index": attribute_index}
    return list(images.values()), meta


class FashionpediaReader(DatasetReader):
    name = "fashionpedia"
    wrapper_dirs = ("fashionpedia", "Fashionpedia")

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        splits: dict[str, list[FashionImageRecord]] = {}
        gt_files: dict[str, str] = {}
        vocab: dict[str, Any] = {}
        for split, (file_name, folder) in FASHION_SPLITS.items():
            json_path = root / file_name
            splits[split], file_meta = parse_fashion_file(json_path, root / folder)
            gt_files[split] = str(json_path)
            if vocab and [c["id"] for c in vocab["categories"]] != [c["id"] for c in file_meta["categories"]]:
                context.warnings.append(f"{json_path}: categories differ from the train file's")
            vocab = vocab or file_meta
        meta = {
            **vocab,
            "category_names": [c["name"] for c in vocab["categories"]],
            "num_attributes": len(vocab["attributes"]),
            "cats_with_attributes": list(CATS_WITH_ATTRIBUTES),
            "super_classes": {k: list(v) for k, v in SUPER_CLASSES.items()},
            "gt_files": gt_files,
        }
        return make_splits(self.name, version, root, splits, meta)

    def dataset_counts(self, data: DatasetSplits) -> dict[str, int]:
        return {"categories": len(data.meta["categories"]), "attributes": len(data.meta["attributes"])}
