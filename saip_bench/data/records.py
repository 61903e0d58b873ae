"""The contract between readers and tasks: plain records (dicts of plain types) per dataset family.

Readers (``saip_bench.data.readers``) produce a ``DatasetSplits``; tasks consume it and nothing else,
so real and synthetic data take one path. Paths are absolute strings. Every field named here is
filled by the reader for that family; optional fields say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict


class ReidRecord(TypedDict):
    """Market-1501 / MSMT17. ``pid`` as in the files (Market: 0 = distractor; -1 dropped at load);
    ``camid`` 0-based. Train pids are *not* relabelled by the reader (tasks relabel)."""

    path: str
    pid: int
    camid: int


class PedesRecord(TypedDict):
    """CUHK-PEDES / ICFG-PEDES: one image with its captions. ``pid``: train = id - 1 (CUHK), else raw."""

    path: str
    pid: int
    captions: list[str]
    file_path: str  # as written in the JSON, relative to the image root


class AttributeRecord(TypedDict):
    """PA-100K / PETA(zs): ``labels`` over *all* stored attributes (0/1 ints, uncertain 2 -> 0)."""

    path: str
    labels: list[int]
    identity: NotRequired[int]  # PETA global identity (col 1), when known


class KeypointAnnotation(TypedDict):
    id: int
    bbox: list[float]  # x, y, w, h
    keypoints: list[float]  # flat [x, y, v] * K (K = 17 COCO, 133 whole-body in body/foot/face/lh/rh order)
    num_keypoints: int
    area: float
    iscrowd: int
    category_id: int
    parts_valid: NotRequired[dict[str, bool]]  # whole-body: face/lefthand/righthand/foot validity
    part_boxes: NotRequired[dict[str, list[float]]]  # whole-body face/hand boxes; zeros = absent


class KeypointImageRecord(TypedDict):
    """COCO keypoints / COCO-WholeBody: one image and its person annotations."""

    image_id: int
    path: str
    width: int
    height: int
    annotations: list[KeypointAnnotation]


class ParsingRecord(TypedDict):
    """LIP / CIHP: image and raw class-id label PNG (None where withheld, e.g. test)."""

    id: str
    path: str
    label_path: str | None
    human_path: NotRequired[str | None]  # CIHP Human_ids
    instance_path: NotRequired[str | None]  # CIHP Instance_ids


class CrowdBox(TypedDict):
    fbox: list[float]  # x, y, w, h (may extend outside the image)
    vbox: list[float]
    hbox: list[float]
    tag: str  # "person" or "mask"
    ignore: bool  # True for mask regions and person boxes with extra.ignore


class CrowdHumanRecord(TypedDict):
    id: str  # contains a comma in the real data
    path: str
    height: int | None
    width: int | None
    boxes: list[CrowdBox]


class FashionAnnotation(TypedDict):
    id: int
    category_id: int  # 0-based, as in the file
    attribute_ids: list[int]  # raw (non-contiguous) ids as in the file
    attribute_indices: NotRequired[list[int]]  # raw ids mapped to 0..A-1 via `attributes`
    bbox: list[float]
    area: float
    iscrowd: int
    segmentation: Any  # polygons or RLE, as in the file


class FashionImageRecord(TypedDict):
    image_id: int
    path: str
    width: int
    height: int
    annotations: list[FashionAnnotation]


@dataclass
class DatasetSplits:
    """What every reader returns: records per split plus dataset-level metadata.

    ``meta`` holds what tasks and metrics need beyond records, e.g. ``attribute_names``,
    ``eval_idx``, ``class_names``, ``keypoint_names``, ``sigmas``, ``gt_files`` (split -> official
    annotation file, so metrics score against the file itself), ``categories``, ``attributes``.
    """

    name: str
    version: str
    root: Path
    splits: dict[str, list[dict[str, Any]]]
    meta: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Split -> counts; always ``images``, plus family units where they apply."""
        out: dict[str, dict[str, int]] = {}
        for split, records in self.splits.items():
            counts = {"images": len(records)}
            if records and "pid" in records[0]:
                counts["identities"] = len({r["pid"] for r in records})
            if records and "captions" in records[0]:
                counts["captions"] = sum(len(r["captions"]) for r in records)
            if records and "annotations" in records[0]:
                counts["annotations"] = sum(len(r["annotations"]) for r in records)
            if records and "boxes" in records[0]:
                counts["persons"] = sum(
                    1 for r in records for b in r["boxes"] if b["tag"] == "person"
                )
                counts["ignore_regions"] = sum(1 for r in records for b in r["boxes"] if b["ignore"])
            out[split] = counts
        return out
