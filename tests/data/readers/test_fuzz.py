"""Property test: malformed annotation files may only raise the project's own errors.

Each dataset gets a valid hand-built root once; every example corrupts its annotation file (random
bytes, truncation, a random value planted at a random place of the JSON / .mat / list, a random file
name) and reads it. Reading either works or raises a ``SaipBenchError``; anything else fails the test.
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saip_bench.data.readers import read_dataset, verify_dataset
from saip_bench.errors import SaipBenchError
from tests.conftest import realdata_root, require_realdata
from tests.data.readers import builders

REAL = realdata_root()
COCO = REAL / "coco_keypoints" / "tests" / "data" / "coco"

NEEDS_REAL = {"peta", "coco", "coco_wholebody", "cihp", "fashionpedia"}  # builders that copy real samples
# name -> (builder(root) -> annotation file, kind of corruption)
TARGETS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "market1501": (builders.build_market1501, "filename"),
    "msmt17": (builders.build_msmt17, "text"),
    "cuhk_pedes": (builders.build_cuhk_pedes, "json"),
    "icfg_pedes": (builders.build_icfg_pedes, "json"),
    "pa100k": (builders.build_pa100k, "mat"),
    "peta": (
        lambda root: builders.build_peta_small(root, REAL / "peta" / "data" / "PETA" / "PETA.mat"),
        "mat",
    ),
    "coco": (lambda root: builders.build_coco(root, COCO), "json"),
    "coco_wholebody": (lambda root: builders.build_coco_wholebody(root, COCO), "json"),
    "lip": (builders.build_lip, "text"),
    "cihp": (lambda root: builders.build_cihp(root, REAL / "cihp" / "datasets" / "CIHP"), "text"),
    "crowdhuman": (builders.build_crowdhuman, "odgt"),
    "fashionpedia": (lambda root: builders.build_fashionpedia(root, REAL / "fashionpedia"), "json"),
}
_ROOTS: dict[str, tuple[Path, Path, bytes]] = {}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _root(name: str) -> tuple[Path, Path, bytes]:
    """A valid root per dataset, built once per session; returns (root, annotation file, its bytes)."""
    if name in NEEDS_REAL:
        require_realdata()
    if name not in _ROOTS:
        root = Path(tempfile.mkdtemp(prefix=f"fuzz_{name}_"))
        target = TARGETS[name][0](root)
        _ROOTS[name] = (root, target, target.read_bytes())
    return _ROOTS[name]


def _plant(node, data, depth: int = 0):
    """Replace, delete or retype one value somewhere in a JSON tree."""
    if isinstance(node, dict) and node and depth < 6 and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node)))
        action = data.draw(st.sampled_from(["descend", "delete", "replace"]))
        if action == "descend":
            node[key] = _plant(node[key], data, depth + 1)
        elif action == "delete":
            del node[key]
        else:
            node[key] = data.draw(json_values)
        return node
    if isinstance(node, list) and node and depth < 6 and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(node) - 1))
        node[index] = _plant(node[index], data, depth + 1)
        return node
    return data.draw(json_values)


def _mat_value(data):
    kind = data.draw(st.sampled_from(["array", "text", "cell", "empty"]))
    if kind == "array":
        shape = data.draw(st.tuples(st.integers(0, 5), st.integers(0, 30)))
        dtype = data.draw(st.sampled_from([np.uint8, np.int16, np.float64]))
        fill = data.draw(st.floats(-5, 5) | st.just(float("nan")))
        if dtype is np.float64:
            return np.full(shape, fill)
        return np.full(shape, 0 if np.isnan(fill) else int(abs(fill)) % 4, dtype)
    if kind == "text":
        return data.draw(st.text(max_size=10))
    if kind == "cell":
        return builders.cell(
            data.draw(st.lists(st.text(string.ascii_letters, min_size=1, max_size=5), max_size=4))
        )
    return np.zeros((0, 0))


def corrupt(name: str, root: Path, target: Path, original: bytes, data) -> None:
    kind = TARGETS[name][1]
    mode = data.draw(st.sampled_from(["bytes", "truncate", "structured"]))
    if mode == "bytes":
        target.write_bytes(data.draw(st.binary(max_size=200)))
    elif mode == "truncate":
        target.write_bytes(original[: data.draw(st.integers(0, max(0, len(original) - 1)))])
    elif kind == "json":
        target.write_text(json.dumps(_plant(json.loads(original), data)))
    elif kind == "odgt":
        lines = original.decode().splitlines()
        index = data.draw(st.integers(0, len(lines) - 1))
        lines[index] = json.dumps(_plant(json.loads(lines[index]), data))
        target.write_text("\n".join(lines))
    elif kind == "text":
        lines = original.decode().splitlines()
        lines[data.draw(st.integers(0, len(lines) - 1))] = data.draw(st.text(max_size=40))
        target.write_text("\n".join(lines))
    elif kind == "mat":
        variables = {k: v for k, v in scipy.io.loadmat(str(target)).items() if not k.startswith("__")}
        key = data.draw(st.sampled_from(sorted(variables)))
        if name == "peta":  # plant inside the struct
            struct = variables["peta"][0][0]
            fields = {f: struct[f] for f in struct.dtype.names}
            field = data.draw(st.sampled_from(sorted(fields)))
            if data.draw(st.booleans()):
                del fields[field]
            else:
                fields[field] = _mat_value(data)
            variables["peta"] = fields
        elif data.draw(st.booleans()):
            del variables[key]
        else:
            variables[key] = _mat_value(data)
        scipy.io.savemat(str(target), variables)
    elif kind == "filename":
        name_text = data.draw(st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=30))
        (target.parent / f"{name_text}.jpg").write_bytes(original)


def restore(name: str) -> None:
    _, target, original = _ROOTS[name]
    target.write_bytes(original)
    if TARGETS[name][1] == "filename":
        for path in target.parent.glob("*.jpg"):
            if path.name not in {"0001_c1s1_001051_00.jpg", "0003_c4s1_000001_00.jpg"}:
                path.unlink()


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    for root, _, _ in _ROOTS.values():
        shutil.rmtree(root, ignore_errors=True)
    _ROOTS.clear()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_valid_fuzz_roots_read(name):
    root, _, _ = _root(name)
    data = read_dataset(name, root)
    assert all(data.splits.values())


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_annotations_raise_only_project_errors(name, data):
    root, target, original = _root(name)
    try:
        corrupt(name, root, target, original, data)
        try:
            read_dataset(name, root).counts()
        except SaipBenchError:
            pass
        report = verify_dataset(name, root)  # never raises for a broken file: it lists it
        assert isinstance(report.problems, list)
    finally:
        restore(name)


zs_values = json_values | st.builds(
    lambda n, k: np.arange(n).reshape(-1) * k, st.integers(0, 40), st.integers(-1, 2)
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.dictionaries(
        st.sampled_from(["image_name", "label", "attr_name", "partition", "label_idx", "other"]),
        zs_values | st.dictionaries(st.sampled_from(["train", "val", "test", "trainval", "eval"]), zs_values),
    )
)
def test_malformed_petazs_pickles_raise_only_project_errors(entries):
    import pickle

    root, _, _ = _root("peta")
    pkl = root / "dataset_zs_run0.pkl"
    try:
        pkl.write_bytes(pickle.dumps(entries))
        try:
            read_dataset("peta", root, version="zs").counts()
        except SaipBenchError:
            pass
    finally:
        pkl.unlink(missing_ok=True)
