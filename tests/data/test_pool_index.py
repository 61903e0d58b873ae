"""The pool index: build, refresh, damage, another pool's index, fingerprint, unreadable images, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saip_bench.bench.provenance import data_fingerprint
from saip_bench.data.pool_index import (
    INDEX_DIRNAME,
    INDEX_FILENAME,
    PoolIndexError,
    build_index,
    fresh_index,
    load_index,
)


def make_pool(root: Path, ids: tuple[str, ...] = ("0000", "0001", "0002"), per_id: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for ident in ids:
        folder = root / "images" / ident
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_id):
            array = rng.integers(0, 255, size=(16 + j, 8, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"{ident}_{j}.jpg")
    (root / "meta.json").write_text(json.dumps({"note": "annotation files are hashed by content"}))
    return root


def index_file(root: Path) -> Path:
    return root / INDEX_DIRNAME / INDEX_FILENAME


def walk_fingerprint(root: Path, sample: int = 64) -> str:
    """The fingerprint as data_fingerprint computed it before the index existed (a reference)."""
    suffixes = {".json", ".odgt", ".txt", ".mat", ".csv", ".pkl", ".pickle", ".yaml", ".yml", ".npy", ".npz"}
    files = []
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(directory) / n for n in filenames if not n.startswith(".")]
    rels = sorted(p.relative_to(root).as_posix() for p in files)
    others = [r for r in rels if Path(r).suffix.lower() not in suffixes]
    sampled = set(sorted(others, key=lambda r: hashlib.sha1(r.encode()).hexdigest())[:sample])
    digest = hashlib.sha256()
    for rel in rels:
        digest.update(f"{rel}\0{(root / rel).stat().st_size}\0".encode())
        if Path(rel).suffix.lower() in suffixes or rel in sampled:
            digest.update((root / rel).read_bytes())
    return digest.hexdigest()[:16]


def test_build_records_images_sizes_identities(tmp_path):
    root = make_pool(tmp_path / "pool")
    index = build_index(root, progress=False)
    assert index.path == index_file(root)
    assert len(index.train) == 9 and list(index.identities) == ["0000", "0001", "0002"]
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first = int(index.train[0])
    assert index.rel(first) == "images/0000/0000_0.jpg"
    assert index.hw[first].tolist() == [16, 8]  # height, width from the header
    assert index.meta["n_files"] == 10  # + meta.json


def test_unchanged_pool_is_reused_and_changed_pool_rebuilt(tmp_path, capsys):
    root = make_pool(tmp_path / "pool")
    first = load_index(root, progress=False)
    again = load_index(root, progress=False)
    assert again.meta["built_at"] == first.meta["built_at"] and "rebuild" not in capsys.readouterr().err
    Image.fromarray(np.zeros((16, 8, 3), np.uint8)).save(root / "images" / "0001" / "new.jpg")
    rebuilt = load_index(root, progress=False)
    assert len(rebuilt.train) == 10
    assert "changed" in capsys.readouterr().err  # the message says why it rebuilt
    (root / "images" / "0002" / "0002_0.jpg").unlink()
    assert len(load_index(root, progress=False).train) == 9
    (root / "meta.json").write_text("{}")  # an annotation file edited in place
    assert fresh_index(root) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_index_is_rebuilt_never_trusted(tmp_path, damage, capsys):
    root = make_pool(tmp_path / "pool")
    built = build_index(root, progress=False)
    expected = built.labels.tolist()
    path = index_file(root)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "flip":  # one byte of the labels array: the checksum no longer matches
        header = built.header
        data[header["data_start"] + header["arrays"]["labels"]["offset"]] ^= 0x01
    else:
        data = bytearray(b"not an index at all")
    path.write_bytes(bytes(data))
    assert fresh_index(root) is None
    index = load_index(root, progress=False)
    assert "damaged" in capsys.readouterr().err
    assert index.labels.tolist() == expected
    assert fresh_index(root) is not None


def test_index_of_another_pool_is_refused(tmp_path):
    pool_a = make_pool(tmp_path / "a")
    pool_b = make_pool(tmp_path / "b", ids=("1000", "1001"))
    build_index(pool_a, progress=False)
    index_file(pool_b).parent.mkdir()
    shutil.copy(index_file(pool_a), index_file(pool_b))
    with pytest.raises(PoolIndexError, match=r"built for .*a.*--rebuild"):
        load_index(pool_b, progress=False)
    assert fresh_index(pool_b) is None  # and never used for its fingerprint
    assert len(load_index(pool_b, rebuild=True, progress=False).train) == 6


def test_moved_pool_keeps_its_index(tmp_path):
    root = make_pool(tmp_path / "pool")
    built = build_index(root, progress=False)
    moved = tmp_path / "moved"
    root.rename(moved)  # mtimes kept: same pool, new place
    index = load_index(moved, progress=False)
    assert index.meta["built_at"] == built.meta["built_at"] and index.root == moved


def test_fingerprint_from_index_equals_the_walk_and_is_stable(tmp_path):
    root = make_pool(tmp_path / "pool")
    walked = data_fingerprint(root)  # no index yet: the walk
    assert walked == walk_fingerprint(root)
    build_index(root, progress=False)
    assert fresh_index(root) is not None
    assert data_fingerprint(root) == walked  # from the index, same value
    build_index(root, progress=False)  # a second build of the same pool
    assert data_fingerprint(root) == walked
    target = root / "images" / "0001" / "0001_1.jpg"
    target.write_bytes(target.read_bytes() + b"\0")  # one image changed (size)
    assert data_fingerprint(root) != walked
    build_index(root, progress=False)
    assert data_fingerprint(root) == walk_fingerprint(root) != walked


def test_unreadable_images_are_reported_and_skipped(tmp_path, capsys):
    root = make_pool(tmp_path / "pool")
    (root / "images" / "0000" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "images" / "0001" / "empty.png").write_bytes(b"")
    index = build_index(root, progress=False)
    assert len(index.train) == 9 and index.unreadable == 2
    assert index.meta["unreadable_first"] == ["images/0000/broken.jpg", "images/0001/empty.png"]
    assert "2 unreadable image(s) skipped" in " ".join(capsys.readouterr().err.split())


def test_parallel_build_matches_inline(tmp_path, monkeypatch):
    import saip_bench.data.pool_index as pool_index

    root = make_pool(tmp_path / "pool", ids=tuple(f"{i:04d}" for i in range(12)), per_id=4)
    inline = build_index(root, progress=False, workers=1)
    expected = (inline.files.tolist(), inline.hw.tolist(), inline.labels.tolist())
    monkeypatch.setattr(pool_index, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(pool_index, "CHUNK", 7)
    parallel = build_index(root, progress=False, workers=2)
    assert (parallel.files.tolist(), parallel.hw.tolist(), parallel.labels.tolist()) == expected


def test_read_only_pool_indexes_into_the_cache(tmp_path, monkeypatch):
    import saip_bench.data.pool_index as pool_index

    root = make_pool(tmp_path / "pool")
    monkeypatch.setenv("SAIP_CACHE_DIR", str(tmp_path / "cache"))
    real_access = os.access
    monkeypatch.setattr(pool_index.os, "access", lambda p, m: False if Path(p) == root / INDEX_DIRNAME
                        else real_access(p, m))
    index = load_index(root, progress=False)
    assert index.path.parent == tmp_path / "cache" / "pool-index"
    assert fresh_index(root) is not None


def test_cli_data_index(tmp_path, capsys):
    from saip_bench.cli import main

    root = make_pool(tmp_path / "pool")
    assert main(["data", "index", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 9 and report["identities"] == 3
    assert report["fingerprint"] == data_fingerprint(root)
    assert main(["data", "index", str(tmp_path / "nope")]) == 2
    assert "images/" in capsys.readouterr().err


def test_an_excluded_annotation_counts_as_absent_with_and_without_the_index(tmp_path):
    """A pool's keypoints.json (only HAP reads it) is left out of the other methods' fingerprint: writing
    it gives the same value as before, from the walk and from the index alike."""
    root = make_pool(tmp_path / "pool")
    before = data_fingerprint(root)
    (root / "keypoints.json").write_text(json.dumps({"images/0000/0000_0.jpg": [[1, 2, 2]] * 17}))
    assert fresh_index(root) is None  # no index yet: the walk
    assert data_fingerprint(root, exclude=("keypoints.json",)) == before
    assert data_fingerprint(root) != before  # without the exclusion it is a changed pool
    load_index(root, progress=False)
    assert fresh_index(root) is not None  # now from the index, same values
    assert data_fingerprint(root, exclude=("keypoints.json",)) == before
    assert data_fingerprint(root) == walk_fingerprint(root)
