"""Fuzz: 200 seeded malformed (and some valid) inputs per ``saip-bench metric`` command (issue #27, item 1).

Every input must end in exit 0 with finite scores, or exit 2 with a one-line ``saip-bench: error:``
message; any other exception (a traceback) fails the test with the variant that caused it. Inputs start
from a valid input built from the tiny synthetic world (tests/metrics/metric_inputs.py) and are broken
one way at a time by a seeded generator: NaN/inf injections, wrong shapes and dtypes, missing keys,
unknown ids, random JSON-tree edits, empty / zero-byte / binary / text / truncated files. Variant ``i``
of a command uses mutator ``i % len(mutators)`` with ``numpy.random.default_rng((command, i))``, so a
failure is reproduced by its variant number. Figures: docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from saip_bench.cli import main
from tests.metrics import metric_inputs as mi

VARIANTS = 200
COMMANDS = (
    "coco-keypoints",
    "wholebody",
    "crowdhuman",
    "fashionpedia",
    "parsing",
    "cihp",
    "reid",
    "retrieval",
    "attributes",
)
WEIRD: tuple[Any, ...] = (
    None,
    True,
    False,
    "x",
    "",
    "1.5",
    [],
    {},
    [1, 2],
    {"a": 1},
    -1,
    0,
    3.5,
    2**70,
    -(2**70),
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    10**400,
    -(10**4000),
)
NUMBERS: tuple[float, ...] = (float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 1e-320, -5.0, 0.0)

Mutator = Callable[[np.random.Generator, Path], list[str]]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``main`` in-process; a non-project exception propagates (it is the traceback we hunt)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def classify(argv: list[str]) -> tuple[str, str]:
    """('scored' | 'rejected' | 'FAIL', detail)."""
    try:
        code, out, err = run_cli(argv)
    except (Exception, SystemExit) as exc:  # a traceback (or an argparse exit) is what the fuzz hunts
        return "FAIL", "".join(traceback.format_exception(exc))[-1500:]
    if code == 0:
        try:
            scores = json.loads(out)
        except json.JSONDecodeError:
            return "FAIL", f"exit 0 without a JSON object: {out[:300]!r}"
        bad = {k: v for k, v in scores.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
        return ("FAIL", f"exit 0 with non-finite scores {bad}") if bad else ("scored", "")
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 2 and len(lines) == 1 and lines[0].startswith("saip-bench: error: ") and len(lines[0]) > 25:
        return "rejected", lines[0]
    return "FAIL", f"exit {code}, stderr {err[-800:]!r}"


# -- generic mutations -------------------------------------------------------------------------------


def break_file(rng: np.random.Generator, path: Path) -> str:
    """Replace a file by an unreadable variant; returns the variant's name."""
    data = path.read_bytes() if path.is_file() else b""
    kind = str(
        rng.choice(
            [
                "zero",
                "blank",
                "text",
                "binary",
                "truncate",
                "missing",
                "directory",
                "latin1",
                "flip",
                "nested",
                "wrong_top",
            ]
        )
    )
    if kind in ("missing", "directory"):
        path.unlink(missing_ok=True)
        if kind == "directory":
            path.mkdir()
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "blank":
        path.write_bytes(b" \n\n\t ")
    elif kind == "text":
        path.write_text("this is not the file you are looking for\n1,2,3\n")
    elif kind == "binary":
        path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes())
    elif kind == "truncate":
        path.write_bytes(data[: int(rng.integers(0, max(1, len(data))))])
    elif kind == "latin1":
        path.write_bytes(b"\xe9\xff" + data)
    elif kind == "flip":
        raw = bytearray(data or b"x")
        for _ in range(int(rng.integers(1, 6))):
            raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(raw))
    elif kind == "nested":
        path.write_text("[" * 200000 + "]" * 200000)
    else:
        path.write_text(json.dumps(rng.choice(["a string", 3, None, {"images": 1}], 1)[0]))
    return kind


def pick(rng: np.random.Generator, values: Any) -> Any:
    return values[int(rng.integers(0, len(values)))]


def mutate_tree(rng: np.random.Generator, node: Any) -> Any:
    """One random edit somewhere in a JSON tree: replace, delete, duplicate or truncate a node."""
    if not isinstance(node, (list, dict)) or not node or rng.random() < 0.2:
        return pick(rng, WEIRD)
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    key = pick(rng, keys)
    op = rng.random()
    if op < 0.15:  # delete
        node = copy.copy(node)
        del node[key]
        return node
    if op < 0.2 and isinstance(node, list):  # duplicate or truncate a list
        return (
            [*node, copy.deepcopy(node[key])]
            if rng.random() < 0.5
            else node[: int(rng.integers(0, len(node)))]
        )
    node = copy.copy(node)
    node[key] = mutate_tree(rng, node[key])
    return node


def inject_number(rng: np.random.Generator, values: list[Any]) -> None:
    values[int(rng.integers(0, len(values)))] = pick(rng, (*NUMBERS, "7", None, True))


# -- per-command inputs and mutators -----------------------------------------------------------------


def json_command(
    world: Path,
    gt_name: str,
    results: list[dict[str, Any]],
    command: str,
    targeted: list[Callable[[np.random.Generator, list[dict[str, Any]]], None]],
    extra: tuple[str, ...] = (),
    gt_images: int | None = None,
) -> list[Mutator]:
    """Mutators of a (GT JSON, results JSON) command: file breaks, tree edits, targeted edits, valid noise."""
    gt_data = json.loads((world / gt_name).read_text())
    if gt_images is not None:  # fewer images: each scored variant runs faster
        keep = {image["id"] for image in gt_data["images"][:gt_images]}
        gt_data["images"] = [image for image in gt_data["images"] if image["id"] in keep]
        gt_data["annotations"] = [a for a in gt_data["annotations"] if a["image_id"] in keep]
        results = [r for r in results if r["image_id"] in keep]

    def files(tmp: Path, gt: Any, pred: Any) -> list[str]:
        gt_path, pred_path = tmp / "gt.json", tmp / "pred.json"
        gt_path.write_text(json.dumps(gt))
        pred_path.write_text(json.dumps(pred))
        return ["metric", command, "--gt", str(gt_path), "--pred", str(pred_path), *extra, "--json"]

    def broken_pred(rng, tmp):
        argv = files(tmp, gt_data, results)
        break_file(rng, tmp / "pred.json")
        return argv

    def broken_gt(rng, tmp):
        argv = files(tmp, gt_data, results)
        break_file(rng, tmp / "gt.json")
        return argv

    def tree_pred(rng, tmp):
        return files(tmp, gt_data, mutate_tree(rng, copy.deepcopy(results)))

    def tree_gt(rng, tmp):
        return files(tmp, mutate_tree(rng, copy.deepcopy(gt_data)), results)

    def target(rng, tmp):
        pred = copy.deepcopy(results)
        pick(rng, targeted)(rng, pred)
        return files(tmp, gt_data, pred)

    def valid_subset(rng, tmp):
        pred = [r for r in copy.deepcopy(results) if rng.random() < 0.7]
        for r in pred:
            r["score"] = float(rng.uniform(0, 1))
        return files(tmp, gt_data, pred)

    return [
        broken_pred,
        tree_pred,
        target,
        tree_pred,
        target,
        broken_gt,
        target,
        tree_gt,
        tree_pred,
        valid_subset,
    ]


def keypoint_targets(keys: tuple[str, ...]) -> list[Callable]:
    def nan_point(rng, pred):
        inject_number(rng, pick(rng, pred)[pick(rng, keys)])

    def unknown_id(rng, pred):
        pick(rng, pred)[pick(rng, ["image_id", "category_id"])] = pick(
            rng, [999999, -3, 2.5, "17", None, [1]]
        )

    def bad_score(rng, pred):
        pick(rng, pred)["score"] = pick(rng, WEIRD)

    def wrong_length(rng, pred):
        item = pick(rng, pred)
        key = pick(rng, keys)
        item[key] = item[key][: int(rng.integers(0, len(item[key])))]

    def drop_key(rng, pred):
        item = pick(rng, pred)
        del item[pick(rng, [k for k in item if k != "category_id"])]

    def other_type(rng, pred):
        pick(rng, pred)[pick(rng, ["segmentation", "bbox", "caption"])] = pick(
            rng, [[1, 2, 3, 4], [], "x", None]
        )

    def noise(rng, pred):  # valid: moved points
        item = pick(rng, pred)
        for key in keys:
            item[key] = (np.asarray(item[key]) + rng.normal(0, 5, len(item[key]))).tolist()

    return [nan_point, unknown_id, bad_score, wrong_length, drop_key, other_type, noise]


def fashion_targets() -> list[Callable]:
    def nan_box(rng, pred):
        inject_number(rng, pick(rng, pred)["bbox"])

    def bad_ids(rng, pred):
        key = pick(rng, ["image_id", "category_id", "attribute_ids"])
        item = pick(rng, pred)
        item[key] = (
            pick(rng, [999999, -1, [99999], "3", None, [[1]], 2.5])
            if key != "attribute_ids"
            else pick(rng, [[99999], "1", None, [None], [1.5], 7])
        )

    def bad_score(rng, pred):
        pick(rng, pred)["score"] = pick(rng, WEIRD)

    def bad_rle(rng, pred):
        segm = pick(rng, pred)["segmentation"]
        counts = segm["counts"]
        choice = int(rng.integers(0, 7))
        if choice == 0:
            segm["counts"] = counts[: int(rng.integers(0, len(counts)))]
        elif choice == 1:
            segm["counts"] = counts + pick(rng, ["P", "o", "\x7f", "\u00e9", "0" * 20])
        elif choice == 2:
            segm["size"] = pick(rng, [[10, 10], [1], "x", None, [0, 0], [segm["size"][1], segm["size"][0]]])
        elif choice == 3:
            segm["counts"] = [int(v) for v in rng.integers(-5, 50, int(rng.integers(0, 30)))]
        elif choice == 4:
            raw = list(counts)
            raw[int(rng.integers(0, len(raw)))] = chr(int(rng.integers(32, 127)))
            segm["counts"] = "".join(raw)
        elif choice == 5:
            pick(rng, pred)["segmentation"] = pick(
                rng,
                [
                    [[1, 2, 3, 4]],
                    [],
                    [[1e9, 2, 3, 4, 5, 6]],
                    [[None] * 6],
                    [[1, 2, 3, 4, 5, 6, 7]],
                    "x",
                    {"counts": "0"},
                ],
            )
        else:
            del segm[pick(rng, ["size", "counts"])]

    def drop_boxes(rng, pred):  # segmentation-only results: loadRes reads areas from the RLE
        for item in pred:
            item.pop("bbox", None)
        if rng.random() < 0.5:
            bad_rle(rng, pred)

    def big_box(rng, pred):
        pick(rng, pred)["bbox"] = [float(v) for v in rng.uniform(-1e7, 1e7, 4)]

    def noise(rng, pred):  # valid: moved boxes, other scores
        for item in pred:
            item["bbox"] = [max(0.0, v + float(rng.normal(0, 2))) for v in item["bbox"]]
            item["score"] = float(rng.uniform(0, 1))

    return [nan_box, bad_ids, bad_score, bad_rle, bad_rle, drop_boxes, big_box, noise]


def crowdhuman_mutators(world: Path) -> list[Mutator]:
    gt_lines = [json.loads(line) for line in (world / mi.CROWDHUMAN_GT).read_text().splitlines() if line]
    results = mi.crowdhuman_results(world)

    def write(path: Path, records: Any) -> str:
        if isinstance(records, list):
            return str(mi.write_odgt(path, records))
        path.write_text(json.dumps(records) + "\n")  # a tree edit replaced the whole list
        return str(path)

    def files(tmp, gt, pred):
        return [
            "metric",
            "crowdhuman",
            "--gt",
            write(tmp / "gt.odgt", gt),
            "--pred",
            write(tmp / "pred.odgt", pred),
            "--json",
        ]

    def broken(rng, tmp):
        argv = files(tmp, gt_lines, results)
        break_file(rng, tmp / pick(rng, ["pred.odgt", "pred.odgt", "gt.odgt"]))
        return argv

    def tree(rng, tmp):
        if rng.random() < 0.75:
            return files(tmp, gt_lines, mutate_tree(rng, copy.deepcopy(results)))
        return files(tmp, mutate_tree(rng, copy.deepcopy(gt_lines)), results)

    def target(rng, tmp):
        pred = copy.deepcopy(results)
        record = pick(rng, pred)
        choice = int(rng.integers(0, 6))
        if choice == 0:
            inject_number(rng, pick(rng, record["dtboxes"])["box"])
        elif choice == 1:
            pick(rng, record["dtboxes"])["score"] = pick(rng, WEIRD)
        elif choice == 2:
            record[pick(rng, ["height", "width"])] = pick(rng, WEIRD)
        elif choice == 3:
            record[pick(rng, ["dtboxes", "ID"])] = pick(rng, WEIRD)
        elif choice == 4:
            pred.append(copy.deepcopy(record) if rng.random() < 0.5 else {**record, "ID": "unknown"})
        else:
            pred.remove(record)
        return files(tmp, gt_lines, pred)

    def garbage_line(rng, tmp):
        argv = files(tmp, gt_lines, results)
        path = tmp / "pred.odgt"
        lines = path.read_text().splitlines()
        lines.insert(
            int(rng.integers(0, len(lines) + 1)), pick(rng, ["{", "[]", "null", '{"no_id": 1}', "\x00"])
        )
        path.write_text("\n".join(lines) + "\n")
        return argv

    def valid(rng, tmp):
        pred = copy.deepcopy(results)
        for record in pred:
            keep = rng.random()
            record["dtboxes"] = [
                {
                    **b,
                    "box": [v + float(rng.normal(0, 3)) for v in b["box"]],
                    "score": float(rng.uniform(0, 1)),
                }
                for b in record["dtboxes"]
                if rng.random() < keep
            ]
        return files(tmp, gt_lines, pred)

    return [broken, tree, target, target, garbage_line, tree, target, valid]


def npz_mutators(
    command: str, base: dict[str, np.ndarray], extra_args: tuple[str, ...] = ()
) -> list[Mutator]:
    def save(tmp: Path, arrays: dict[str, Any], args: tuple[str, ...] = extra_args) -> list[str]:
        path = tmp / "preds.npz"
        np.savez(path, **arrays)
        return ["metric", command, "--input", str(path), *args, "--json"]

    def broken(rng, tmp):
        argv = save(tmp, base)
        kind = pick(rng, ["file", "file", "npy", "zip_member"])
        path = tmp / "preds.npz"
        if kind == "file":
            break_file(rng, path)
        elif kind == "npy":
            with path.open("wb") as handle:
                np.save(handle, pick(rng, list(base.values())))
        else:
            np.savez_compressed(path, **base)
            raw = bytearray(path.read_bytes())
            start = int(rng.integers(40, len(raw) - 30))
            raw[start : start + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
            path.write_bytes(bytes(raw))
        return argv

    def values(rng, tmp):
        arrays = {k: v.copy() for k, v in base.items()}
        key = pick(rng, list(arrays))
        array = arrays[key].astype(np.float64)
        flat = array.reshape(-1)
        for _ in range(int(rng.integers(1, 4))):
            flat[int(rng.integers(0, flat.size))] = pick(rng, (*NUMBERS, 2.5, -1.0, 1e30, 2.0**63))
        arrays[key] = array
        return save(tmp, arrays)

    def shapes(rng, tmp):
        arrays = dict(base)
        key = pick(rng, list(arrays))
        array = arrays[key]
        choice = int(rng.integers(0, 6))
        if choice == 0:
            arrays[key] = array.T if array.ndim == 2 else array[:-1]
        elif choice == 1:
            arrays[key] = array[None]
        elif choice == 2:
            arrays[key] = array[:0]
        elif choice == 3:
            arrays[key] = np.asarray(array.reshape(-1)[0])
        elif choice == 4:
            arrays[key] = np.concatenate([array, array[:1]])
        else:
            arrays[key] = array.reshape(-1)
        return save(tmp, arrays)

    def dtypes(rng, tmp):
        arrays = dict(base)
        key = pick(rng, list(arrays))
        dtype = pick(
            rng, ["U8", "bool", "complex128", "float16", "int8", "uint64", "S3", "datetime64[s]", "object"]
        )
        try:
            arrays[key] = arrays[key].astype(dtype)
        except (TypeError, ValueError):
            arrays[key] = arrays[key].astype("U8")
        return save(tmp, arrays)

    def keys(rng, tmp):
        arrays = dict(base)
        if rng.random() < 0.6:
            del arrays[pick(rng, list(arrays))]
        else:
            arrays[pick(rng, list(arrays)) + "_x"] = arrays.pop(pick(rng, list(arrays)))
        return save(tmp, arrays)

    def valid(rng, tmp):
        arrays = {k: v.copy() for k, v in base.items()}
        for key, array in arrays.items():
            if array.dtype.kind == "f":
                arrays[key] = np.clip(array + rng.normal(0, 0.2, array.shape), 0, 1)
        return save(tmp, arrays)

    return [broken, values, shapes, dtypes, keys, values, shapes, valid]


def image_dir_mutators(
    command: str,
    gt_dir: Path,
    pred_source: Path,
    args: Callable[[Path, Path], list[str]],
    instances: bool = False,
) -> list[Mutator]:
    """Mutators of a folder of label / instance PNGs (+ '<class> <score>' txt files for instances)."""

    def prepare(tmp: Path) -> Path:
        return mi.copy_dir(pred_source, tmp / "pred")

    def victim(rng, pred: Path, suffix: str = ".png") -> Path:
        return pick(rng, sorted(pred.glob(f"*{suffix}")))

    def broken_png(rng, tmp):
        pred = prepare(tmp)
        break_file(rng, victim(rng, pred))
        return args(gt_dir, pred)

    def bad_image(rng, tmp):
        pred = prepare(tmp)
        path = victim(rng, pred)
        labels = np.array(Image.open(path))
        choice = int(rng.integers(0, 6))
        if choice == 0:
            Image.fromarray(np.stack([labels] * 3, axis=-1)).save(path)
        elif choice == 1:
            Image.fromarray(labels[:-3]).save(path)
        elif choice == 2:
            labels = labels.copy()
            labels[int(rng.integers(0, labels.shape[0])), int(rng.integers(0, labels.shape[1]))] = int(
                rng.integers(20, 255)
            )
            Image.fromarray(labels).save(path)
        elif choice == 3:
            Image.fromarray(labels.astype(np.uint16) * 300).save(path)
        elif choice == 4:
            Image.fromarray(labels.astype(np.float32)).save(path.with_suffix(".tiff"))
            path.with_suffix(".tiff").rename(path)
        else:
            path.unlink()
        return args(gt_dir, pred)

    def bad_txt(rng, tmp):
        pred = prepare(tmp)
        path = victim(rng, pred, ".txt")
        lines = path.read_text().splitlines() or ["1 0.5"]
        index = int(rng.integers(0, len(lines)))
        cls, score = lines[index].split()[:2]
        lines[index] = pick(
            rng,
            [
                f"{cls} nan",
                f"{cls} inf",
                f"{cls} -inf",
                f"99 {score}",
                f"-1 {score}",
                f"1.5 {score}",
                f"{cls}",
                f"{cls} high",
                "\x00\x01",
                f"{cls} {score} extra",
            ],
        )
        if rng.random() < 0.3:
            path.write_bytes(b"\xff\xfe" + "\n".join(lines).encode())
        else:
            path.write_text("\n".join(lines) + "\n")
        return args(gt_dir, pred)

    def valid(rng, tmp):
        pred = prepare(tmp)
        for path in sorted(pred.glob("*.png")):
            labels = np.array(Image.open(path))
            noise = rng.random(labels.shape) < 0.1
            labels = np.where(noise, rng.integers(0, int(labels.max()) + 1, labels.shape), labels)
            Image.fromarray(labels.astype(np.uint8)).save(path)
        return args(gt_dir, pred)

    def broken_gt(rng, tmp):
        gt = mi.copy_dir(gt_dir, tmp / "gt")
        if rng.random() < 0.5:
            break_file(rng, victim(rng, gt))
        else:  # blank GT maps: background only
            for path in sorted(gt.glob("*.png")):
                Image.fromarray(np.zeros_like(np.array(Image.open(path)))).save(path)
        return args(gt, pred_source)

    mutators = [broken_png, bad_image, bad_image, valid, broken_png, bad_image, broken_gt]
    if instances:
        mutators += [bad_txt, bad_txt, bad_txt]
    return mutators


def build_cases(world: Path, scratch: Path) -> dict[str, list[Mutator]]:
    """The mutators of each command, from the synthetic world's GT files (``scratch``: a folder to write
    the CIHP instance predictions into)."""
    lip = world / mi.LIP_GT
    cihp_instances = mi.cihp_instance_predictions(world, scratch / "cihp_instances")

    def parsing_args(gt: Path, pred: Path) -> list[str]:
        return [
            "metric",
            "parsing",
            "--gt-dir",
            str(gt),
            "--pred-dir",
            str(pred),
            "--num-classes",
            "20",
            "--json",
        ]

    def cihp_args(gt: Path, pred: Path) -> list[str]:
        return [
            "metric",
            "cihp",
            "--gt-instances",
            str(gt),
            "--gt-categories",
            str(world / mi.CIHP_CATEGORIES),
            "--pred-instances",
            str(pred),
            "--json",
        ]

    def parsing_classes(rng, tmp):
        return [
            "metric",
            "parsing",
            "--gt-dir",
            str(lip),
            "--pred-dir",
            str(lip),
            "--num-classes",
            str(pick(rng, [0, -1, 1, 2, 255, 256, 257, 10**9])),
            "--json",
        ]

    fashion_results = mi.fashionpedia_results(world)
    return {
        "coco-keypoints": json_command(
            world, mi.COCO_GT, mi.keypoint_results(world), "coco-keypoints", keypoint_targets(("keypoints",))
        ),
        "wholebody": json_command(
            world,
            mi.WHOLEBODY_GT,
            mi.keypoint_results(world, wholebody=True),
            "wholebody",
            keypoint_targets(mi.WHOLEBODY_KEYS),
            gt_images=2,
        ),
        "crowdhuman": crowdhuman_mutators(world),
        "fashionpedia": json_command(
            world,
            mi.FASHIONPEDIA_GT,
            fashion_results,
            "fashionpedia",
            fashion_targets(),
            extra=("--iou-type", "bbox"),
            gt_images=1,
        )
        + json_command(
            world,
            mi.FASHIONPEDIA_GT,
            fashion_results,
            "fashionpedia",
            fashion_targets(),
            extra=("--iou-type", "segm"),
            gt_images=1,
        )[:-1],
        "parsing": [*image_dir_mutators("parsing", lip, lip, parsing_args), parsing_classes],
        "cihp": image_dir_mutators(
            "cihp", world / mi.CIHP_INSTANCES, cihp_instances, cihp_args, instances=True
        ),
        "reid": npz_mutators("reid", mi.reid_arrays()) + npz_mutators("reid", mi.reid_feature_arrays())[1:-1],
        "retrieval": npz_mutators("retrieval", mi.retrieval_arrays()),
        "attributes": npz_mutators("attributes", mi.attribute_arrays())
        + npz_mutators("attributes", mi.attribute_arrays(), ("--logits",))[1:3],
    }


@pytest.fixture(scope="module")
def fuzz_cases(synth_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Mutator]]:
    return build_cases(synth_world, tmp_path_factory.mktemp("fuzz"))


def fuzz(
    command: str, mutators: list[Mutator], root: Path, variants: int = VARIANTS
) -> tuple[Counter, list[str]]:
    outcomes: Counter = Counter()
    failures = []
    for index in range(variants):
        tmp = root / f"{index:03d}"
        tmp.mkdir(parents=True)
        rng = np.random.default_rng([zlib.crc32(command.encode()), index])
        mutator = mutators[index % len(mutators)]
        argv = mutator(rng, tmp)
        kind, detail = classify(argv)
        outcomes[kind] += 1
        if kind == "FAIL":
            failures.append(f"variant {index} ({mutator.__name__}): {detail}")
        shutil.rmtree(tmp, ignore_errors=True)
    return outcomes, failures


@pytest.mark.parametrize("command", COMMANDS)
def test_metric_command_survives_200_malformed_inputs(command, fuzz_cases, tmp_path, record_property):
    outcomes, failures = fuzz(command, fuzz_cases[command], tmp_path)
    record_property("outcomes", dict(outcomes))
    print(f"\n{command}: {dict(outcomes)}")
    assert not failures, f"{len(failures)} of {VARIANTS} inputs ended badly:\n" + "\n\n".join(failures[:5])
    assert sum(outcomes.values()) == VARIANTS
    assert outcomes["rejected"] > VARIANTS // 3, outcomes  # mostly malformed inputs
    assert outcomes["scored"] > 0, outcomes  # and some valid ones, scored
