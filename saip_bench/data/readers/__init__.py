"""Native-format dataset readers: the one door through which real and synthetic data enter saip-bench.

``read_dataset(name, root, version)`` returns a ``DatasetSplits`` (see ``saip_bench.data.records``);
``verify_dataset`` says whether a root is usable and lists every problem; ``resolve_root`` finds a root
from ``--data-root`` or ``$SAIP_DATA/<name>`` (never a hard-coded path). Layouts: ``docs/layouts.md``;
facts: the dataset cards in ``datasets/`` and docs/formats.md.

``DatasetSplits.meta`` per family (besides ``warnings``):

- market1501 / msmt17: ``num_cameras``; Market ``junk_dropped`` (split -> count), ``distractor_pid`` 0.
- cuhk_pedes / icfg_pedes: ``annotation_file``.
- pa100k / peta: ``attribute_names`` (all stored), ``eval_idx`` (columns scored: PA-100K 26, PETA 35,
  PETAzs all stored), ``group_order`` (Rethinking's reporting order or None), ``annotation_file``; PETA
  also ``eval_attribute_names``, ``partition``, ``num_partitions``, ``color_idx``, ``extra_idx``.
- coco / coco_wholebody: ``keypoint_names``, ``sigmas`` (17 / 133), ``skeleton`` (1-based), ``num_keypoints``,
  ``gt_files`` (split -> official JSON); WholeBody ``part_slices`` (part -> [start, end) in the 133);
  COCO ``detection_files`` when the AP_H_56 person detections are present.
- lip / cihp: ``class_names`` (index 10 differs), ``num_classes``, ``ignore_index`` 255, ``flip_pairs``.
- crowdhuman: ``gt_files`` (split -> odgt), ``image_sizes`` (split -> {ID: [h, w]}), ``box_field`` "fbox".
- fashionpedia: ``categories``, ``attributes`` (sorted by raw id), ``attribute_index`` (raw id -> 0..A-1),
  ``category_names``, ``num_attributes``, ``cats_with_attributes``, ``super_classes``, ``gt_files``.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

from saip_bench.data.readers.base import (
    DatasetReader,
    ReadContext,
    image_size,
    load_id_map,
    load_label,
    open_image,
)
from saip_bench.data.readers.cihp import CIHP_CLASSES, CihpReader
from saip_bench.data.readers.coco_kpt import CocoKeypointsReader, CocoWholeBodyReader
from saip_bench.data.readers.crowdhuman import CrowdHumanReader
from saip_bench.data.readers.fashionpedia import FashionpediaReader
from saip_bench.data.readers.lip import LIP_CLASSES, LipReader
from saip_bench.data.readers.par import PA100KReader, PetaReader
from saip_bench.data.readers.pedes import CuhkPedesReader, IcfgPedesReader
from saip_bench.data.readers.reid import Market1501Reader, MSMT17Reader
from saip_bench.data.readers.verify import VerifyReport, verify
from saip_bench.data.records import DatasetSplits
from saip_bench.errors import UserError
from saip_bench.registry import Registry

READERS: Registry[DatasetReader] = Registry("dataset")
for _reader in (
    Market1501Reader(),
    MSMT17Reader(),
    CuhkPedesReader(),
    IcfgPedesReader(),
    PA100KReader(),
    PetaReader(),
    CocoKeypointsReader(),
    CocoWholeBodyReader(),
    LipReader(),
    CihpReader(),
    CrowdHumanReader(),
    FashionpediaReader(),
):
    READERS.register(_reader.name, _reader, family=type(_reader).__module__.rsplit(".", 1)[-1])

DATA_ENV = "SAIP_DATA"


def get_reader(name: str) -> DatasetReader:
    return READERS.get(name)


def resolve_root(name: str, root: Path | str | None = None) -> Path:
    """``root`` if given, else ``$SAIP_DATA/<name>``; it must exist."""
    get_reader(name)
    if root is None:
        base = os.environ.get(DATA_ENV)
        if not base:
            raise UserError(
                f"no root for dataset {name!r}: pass --data-root DIR (the folder holding the dataset) or set "
                f"${DATA_ENV} so that ${DATA_ENV}/{name} is that folder"
            )
        root = Path(base) / name
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset root {root} for {name!r} does not exist or is not a directory")
    return root


def _read_located(reader: DatasetReader, root: Path, version: str, context: ReadContext) -> DatasetSplits:
    # Building 10^5 small dicts triggers the cyclic GC over and over; it has nothing to collect here.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        data = reader.read(root, version, context)
    finally:
        if gc_was_enabled:
            gc.enable()
    data.meta.setdefault("warnings", []).extend(context.warnings)
    return data


def read_dataset(name: str, root: Path | str | None, version: str | None = None) -> DatasetSplits:
    """Parse the dataset at ``root`` (or ``$SAIP_DATA/<name>``) in its native layout.

    ``version`` None = the card's default when its layout is present, else the detected one.
    Raises ``UserError`` (unknown name / root / version) or ``DataFormatError`` (a broken file).
    """
    reader = get_reader(name)
    located = reader.locate(resolve_root(name, root)).resolve()  # absolute once; records join onto it
    chosen = reader.detect_version(located, version)
    return _read_located(reader, located, chosen, ReadContext())


def verify_dataset(
    name: str, root: Path | str | None, version: str | None = None, full: bool = False
) -> VerifyReport:
    """Check a root against its card; ``.usable`` is True only when no problem was found."""
    reader = get_reader(name)
    return verify(reader, resolve_root(name, root), version=version, full=full)


__all__ = [
    "CIHP_CLASSES",
    "DATA_ENV",
    "LIP_CLASSES",
    "READERS",
    "DatasetReader",
    "VerifyReport",
    "get_reader",
    "image_size",
    "load_id_map",
    "load_label",
    "open_image",
    "read_dataset",
    "resolve_root",
    "verify_dataset",
]
