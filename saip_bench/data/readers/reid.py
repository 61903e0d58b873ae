"""Image ReID: Market-1501 and MSMT17 (V1 / V2), docs/formats.md#market-1501, #msmt17.

Records are ``{path, pid, camid}`` with a 0-based camera. Pids are kept as in the files (train pids are
not relabelled; tasks relabel). Market ``-1`` junk boxes are dropped from every split (torchreid and
FORMATS §14.1); ``0000`` distractors stay in the gallery as negatives.
"""

from __future__ import annotations

import re
from pathlib import Path

from saip_bench.data.readers.base import (
    DatasetReader,
    ReadContext,
    join_path,
    make_splits,
    read_text_lines,
    require_dir,
)
from saip_bench.data.records import DatasetSplits, ReidRecord
from saip_bench.errors import DataFormatError

MARKET_NAME = re.compile(r"^([-\d]+)_c(\d)s(\d+)_(\d+)_(\d+)\.jpg$")
MARKET_LOOSE = re.compile(r"^([-\d]+)_c(\d)")  # torchreid's pattern, for names without the sS part
MARKET_SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_MAX_PID = 1501
MARKET_CAMERAS = 6

MSMT_LISTS = {
    "train": ("list_train.txt", "train"),
    "val": ("list_val.txt", "train"),
    "query": ("list_query.txt", "test"),
    "gallery": ("list_gallery.txt", "test"),
}
MSMT_DIRS = {
    "v1": {"train": "train", "test": "test"},
    "v2": {"train": "mask_train_v2", "test": "mask_test_v2"},
}
MSMT_CAMERAS = 15


def parse_market_name(path: Path) -> tuple[int, int]:
    """(pid, 1-based camera) from ``PPPP_cCsS_FFFFFF_BB.jpg``; pid may be ``-1`` (junk)."""
    match = MARKET_NAME.match(path.name) or MARKET_LOOSE.match(path.name)
    if match is None:
        raise DataFormatError(
            path, "a Market-1501 name PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0001_c1s1_001051_00.jpg)"
        )
    try:
        pid, cam = int(match.group(1)), int(match.group(2))
    except ValueError as exc:
        raise DataFormatError(path, "an integer person id (or -1) before _c") from exc
    if not (pid == -1 or 0 <= pid <= MARKET_MAX_PID):
        raise DataFormatError(path, f"person id -1 or 0..{MARKET_MAX_PID}", str(pid))
    if not 1 <= cam <= MARKET_CAMERAS:
        raise DataFormatError(path, f"camera 1..{MARKET_CAMERAS}", str(cam))
    return pid, cam


def read_market_folder(folder: Path) -> tuple[list[ReidRecord], int]:
    """All ``*.jpg`` of one folder (other files such as ``Thumbs.db`` are ignored), minus junk."""
    require_dir(folder, "a Market-1501 image folder")
    records: list[ReidRecord] = []
    junk = 0
    for path in sorted(folder.glob("*.jpg")):
        pid, cam = parse_market_name(path)
        if pid == -1:
            junk += 1
            continue
        records.append({"path": str(path), "pid": pid, "camid": cam - 1})
    return records, junk


class Market1501Reader(DatasetReader):
    name = "market1501"
    wrapper_dirs = ("Market-1501-v15.09.15", "Market-1501", "market1501")

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        splits: dict[str, list] = {}
        junk: dict[str, int] = {}
        for split, folder in MARKET_SPLIT_DIRS.items():
            splits[split], junk[split] = read_market_folder(root / folder)
        meta = {"junk_dropped": junk, "num_cameras": MARKET_CAMERAS, "distractor_pid": 0}
        return make_splits(self.name, version, root, splits, meta)

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        problems = []
        train_ids = {r["pid"] for r in data.splits["train"]}
        query_ids = {r["pid"] for r in data.splits["query"]}
        gallery_ids = {r["pid"] for r in data.splits["gallery"]}
        if train_ids & query_ids:
            problems.append(f"train and query share person ids {sorted(train_ids & query_ids)[:10]}")
        if 0 in query_ids:
            problems.append("query holds distractor pid 0000 (distractors belong to the gallery only)")
        no_match = sorted(query_ids - gallery_ids)
        if no_match:
            problems.append(f"query pids with no gallery image: {no_match[:10]} ({len(no_match)} in all)")
        return problems


def parse_msmt_camera(list_path: Path, filename: str) -> int:
    """0-based camera from the 3rd ``_`` token of an MSMT17 name (cameras ``01``-``15``)."""
    parts = Path(filename).name.split("_")
    try:
        cam = int(parts[2])
    except (IndexError, ValueError) as exc:
        raise DataFormatError(
            list_path, "MSMT17 names PPPP_NNN_CC_DDDDtod_FFFF_K.jpg (camera = 3rd '_' token)", filename
        ) from exc
    if not 1 <= cam <= MSMT_CAMERAS:
        raise DataFormatError(list_path, f"camera 01..{MSMT_CAMERAS} in {filename}", str(cam))
    return cam - 1


def read_msmt_list(list_path: Path, image_dir: Path) -> list[ReidRecord]:
    """``<pid4>/<filename> <pid>`` lines; the path is relative to ``image_dir``; pids are not relabelled."""
    records: list[ReidRecord] = []
    for number, line in enumerate(read_text_lines(list_path, "an MSMT17 list file"), start=1):
        parts = line.split()
        if len(parts) != 2:
            raise DataFormatError(
                f"{list_path}:{number}",
                "'<pid4>/<filename> <pid>' (e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0')",
                repr(line[:80]),
            )
        rel, pid_text = parts
        try:
            pid = int(pid_text)
        except ValueError as exc:
            raise DataFormatError(f"{list_path}:{number}", "an integer pid after the path", pid_text) from exc
        if pid < 0:
            raise DataFormatError(f"{list_path}:{number}", "a pid >= 0", str(pid))
        camid = parse_msmt_camera(Path(f"{list_path}:{number}"), rel)
        records.append({"path": join_path(image_dir, rel), "pid": pid, "camid": camid})
    return records


class MSMT17Reader(DatasetReader):
    name = "msmt17"
    wrapper_dirs = ("MSMT17_V2", "MSMT17_V1", "MSMT17")

    def read(self, root: Path, version: str, context: ReadContext) -> DatasetSplits:
        dirs = MSMT_DIRS[version]
        if (root / MSMT_DIRS["v1"]["train"]).is_dir() and (root / MSMT_DIRS["v2"]["train"]).is_dir():
            context.warnings.append(
                f"{root} holds both V1 (train/) and V2 (mask_train_v2/) folders; reading {version}"
            )
        splits: dict[str, list] = {}
        for split, (list_name, part) in MSMT_LISTS.items():
            image_dir = root / dirs[part]
            require_dir(image_dir, f"the MSMT17 {version.upper()} image folder {dirs[part]}/")
            splits[split] = read_msmt_list(root / list_name, image_dir)
        meta = {"num_cameras": MSMT_CAMERAS, "image_dirs": {k: str(root / v) for k, v in dirs.items()}}
        return make_splits(self.name, version, root, splits, meta)

    def consistency_problems(self, data: DatasetSplits) -> list[str]:
        problems = []
        query_ids = {r["pid"] for r in data.splits["query"]}
        gallery_ids = {r["pid"] for r in data.splits["gallery"]}
        no_match = sorted(query_ids - gallery_ids)
        if no_match:
            problems.append(f"query pids with no gallery image: {no_match[:10]} ({len(no_match)} in all)")
        return problems
