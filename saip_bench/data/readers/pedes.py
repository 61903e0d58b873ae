"""Text-to-image person retrieval: CUHK-PEDES and ICFG-PEDES (docs/formats.md#cuhk-pedes, #icfg-pedes).

Both JSONs are lists of ``{split, captions, file_path, id, processed_tokens?}``; ``file_path`` is
relative to ``imgs/``. IRRA semantics: CUHK-PEDES train pid = ``id - 1``, val/test pid = raw ``id``;
split values other than ``train``/``test`` go to ``val``. ICFG-PEDES keeps raw ids and has no val split.
Captions are kept in full (some CUHK images have more than two).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saip_bench.data.readers.base import (
    DatasetReader,
    ReadContext,
    as_dict,
    as_int,
    as_list,
    join_path,
    load_json,
    make_splits,
)
from saip_bench.data.records import DatasetSplits, PedesRecord
from saip_bench.errors import DataFormatError

# caption_all.json (the original release) has no split field; the standard protocol splits by id:
# 11,003 train ids (1-11003, FORMATS §3), then 1,000 val and 1,000 test ids (inferred from the counts).
CUHK_TRAIN_MAX_ID = 11003
CUHK_VAL_MAX_ID = 12003


def _captions(value: Any, where: str) -> list[str]:
    captions = as_list(value, where, "'captions'")
    if not captions or not all(isinstance(c, str) for c in captions):
        raise DataFormatError(where, "'captions' as a non-empty list of strings", repr(value)[:80])
    return list(captions)


def parse_pedes_entries(
    json_path: Path, image_root: Path, entries: Any, train_offset: int, splits_allowed: tuple[str, ...]
) -> dict[str, list[PedesRecord]]:
    """Group entries by split, with IRRA's pid convention (train pid = id - ``train_offset``)."""
    entries = as_list(entries, json_path, "a list of {split, captions, file_path, id} entries")
    splits: dict[str, list[PedesRecord]] = {name: [] for name in splits_allowed}
    for index, entry in enumerate(entries):
        where = f"{json_path}[{index}]"
        entry = as_dict(entry, where, "an entry", ("split", "captions", "file_path", "id"))
        split_value = entry["split"]
        if not isinstance(split_value, str):
            raise DataFormatError(where, "'split' as a string (train/val/test)", repr(split_value))
        split = split_value if split_value in ("train", "test") else "val"
        if split not in splits:
            raise DataFormatError(where, f"'split' in {list(splits_allowed)}", repr(split_value))
        file_path = entry["file_path"]
        if not isinstance(file_path, str) or not file_path:
            raise DataFormatError(where, "'file_path' as a relative image path", repr(file_path))
        raw_id = as_int(entry["id"], where, "'id'")
        pid = raw_id - train_offset if split == "train" else raw_id
        if pid < 0:
            raise DataFormatError(where, f"'id' >= {train_offset} in the train split", str(raw_id))
        splits[split].append(
            {
                "path": join_path(image_root, file_path),
                "pid": pid,
                "captions": _captions(entry["captions"], where),
                "file_path": file_path,
            }
        )
    return splits


def _train_pid_problems(data: DatasetSplits) -> list[str]:
    pids = sorted({r["pid"] for r in data.splits.get("train", [])})
    if pids and pids != list(range(len(pids))):
        return [f"train pids are not contiguous from 0 (found {len(pids)} ids, max {pids[-1]})"]
    return []


class CuhkPedesReader(DatasetReader):
    name = "cuhk_pedes"
    wrapper_dirs = ("CUHK-PEDES",)

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        image_root = root / "imgs"
        if version == "caption_all":
            json_path = root / "caption_all.json"
            entries = as_list(load_json(json_path), json_path, "a list of {id, file_path, captions}")
            entries = [self._with_split(json_path, i, e) for i, e in enumerate(entries)]
            context.warnings.append(
                "caption_all.json has no split field: split by id (train 1-11003, val 11004-12003, "
                "test 12004-13003), the standard protocol; reid_raw.json is preferred"
            )
        else:
            json_path = root / "reid_raw.json"
            entries = load_json(json_path)
        splits = parse_pedes_entries(json_path, image_root, entries, 1, ("train", "val", "test"))
        meta = {"annotation_file": str(json_path)}
        return make_splits(self.name, version, root, splits, meta)

    @staticmethod
    def _with_split(json_path: Path, index: int, entry: Any) -> dict[str, Any]:
        where = f"{json_path}[{index}]"
        entry = as_dict(entry, where, "an entry", ("id", "file_path", "captions"))
        raw_id = as_int(entry["id"], where, "'id'")
        split = "train" if raw_id <= CUHK_TRAIN_MAX_ID else "val" if raw_id <= CUHK_VAL_MAX_ID else "test"
        return {**entry, "split": split}

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        return _train_pid_problems(data) + _overlap_problems(data, ("train", "val", "test"))


class IcfgPedesReader(DatasetReader):
    name = "icfg_pedes"
    wrapper_dirs = ("ICFG-PEDES",)

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        json_path = root / "ICFG-PEDES.json"
        if not json_path.exists() and (root / "ICFG_PEDES.json").exists():
            raise DataFormatError(
                json_path,
                "ICFG-PEDES.json (hyphen; the IRRA README's ICFG_PEDES.json is a typo)",
                "ICFG_PEDES.json: rename it",
            )
        splits = parse_pedes_entries(json_path, root / "imgs", load_json(json_path), 0, ("train", "test"))
        meta = {"annotation_file": str(json_path)}
        return make_splits(self.name, version, root, splits, meta)

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        return _overlap_problems(data, ("train", "test"))


def _overlap_problems(data: DatasetSplits, names: tuple[str, ...]) -> list[str]:
    """Raw ids must not cross splits (CUHK train pids are id - 1, so compare raw ids)."""
    offset = 1 if data.name == "cuhk_pedes" else 0
    raw: dict[str, set[int]] = {}
    for name in names:
        shift = offset if name == "train" else 0
        raw[name] = {r["pid"] + shift for r in data.splits.get(name, [])}
    problems = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = raw[a] & raw[b]
            if shared:
                problems.append(f"splits {a} and {b} share identities {sorted(shared)[:10]} ({len(shared)})")
    return problems
