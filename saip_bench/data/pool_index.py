"""A compact, memory-mapped index of a pretraining pool (``saip-bench data index POOL``).

Why: a LUPerson-scale pool holds a million small crops. Walking and ``stat``-ing it on every rank, then
copying a Python list of a million ``Path`` objects into every DataLoader worker (copy-on-write pages are
dirtied by reference counts) cost minutes and tens of GB. The index is built once, in parallel, and kept in
ONE file whose arrays every process maps read-only: the pages are shared by all ranks and workers, and a
pickled dataset carries only the file's name.

What the file holds (``<pool>/.saip-index/pool.idx``, or a per-user cache when the pool is read-only):

- every non-hidden file under the pool (the same walk as ``data_fingerprint``): relative path (a UTF-8
  blob plus offsets), size, mtime, kind (training image / background / other / unreadable image) and the
  image size read from its header (height, width; -1 when not an image);
- the training images in training order and their identity label (the parent folder's name, -1 for flat
  files), the identity names, the background images;
- every directory's mtime, so a changed pool is noticed with one ``stat`` per directory (adding, removing
  or renaming a file changes its folder's mtime), and the non-image files' size and mtime;
- a JSON header with the pool's path, counts, the unreadable images, the fingerprint sample and the
  SHA-256 of every array: a truncated or damaged index fails these checks and is rebuilt, never trusted.

Not noticed by the cheap check: an image rewritten in place with the same name (its folder's mtime does
not change); ``saip-bench data index POOL --rebuild`` rebuilds on demand.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, overload

import numpy as np

from saip_bench.errors import DataFormatError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# data_fingerprint hashes these by content whatever their size; of the other files a fixed sample
ANNOTATION_SUFFIXES = frozenset({
    ".json", ".odgt", ".txt", ".mat", ".csv", ".pkl", ".pickle", ".yaml", ".yml", ".npy", ".npz",
})
FINGERPRINT_SAMPLE = 64
INDEX_DIRNAME = ".saip-index"
INDEX_FILENAME = "pool.idx"
MAGIC = b"SAIPPIDX"
VERSION = 1
ALIGN = 64
# file kinds
TRAIN, BACKGROUND, OTHER, BAD_TRAIN, BAD_BACKGROUND = 0, 1, 2, 3, 4
POOL_IMAGE_DIRS = ("images", "train")
PARALLEL_MIN_FILES = 4096  # below this a process pool costs more than it saves
CHUNK = 2048


class PoolIndexError(DataFormatError):
    """An index that must not be used for this pool (built for another one)."""


class IndexDamaged(Exception):
    """Internal: the index file failed a check; the caller rebuilds it."""


# --------------------------------------------------------------------------------------------- helpers
def cache_dir() -> Path:
    """Where indexes of read-only pools go: ``pool-index/`` of the saip-bench cache (``cachedir``)."""
    from saip_bench.cachedir import default_cache_dir

    return default_cache_dir() / "pool-index"


def index_locations(root: Path) -> list[Path]:
    """Candidate index files of ``root``: inside the pool first, then the per-user cache."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / INDEX_DIRNAME / INDEX_FILENAME, cache_dir() / f"{root.name}-{key}.idx"]


def pool_image_dir(root: Path) -> str | None:
    """The folder of training images of a pool (``images/`` or LUPerson's ``train/``), relative."""
    return next((d for d in POOL_IMAGE_DIRS if (root / d).is_dir()), None)


def _parts_key(rel: str) -> tuple[str, ...]:
    """Sort key equal to ``Path`` ordering (by components), the order training always used."""
    return tuple(rel.split("/"))


def _is_image(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES


def fingerprint_sample(rels: Sequence[str], sample: int = FINGERPRINT_SAMPLE) -> set[str]:
    """The files whose content ``data_fingerprint`` reads: ``sample`` non-annotation files chosen by a hash
    of their path (stable across machines and copies)."""
    others = [rel for rel in rels if PurePosixPath(rel).suffix.lower() not in ANNOTATION_SUFFIXES]
    return set(sorted(others, key=lambda rel: hashlib.sha1(rel.encode()).hexdigest())[:sample])


def walk_files(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted relative paths of every non-hidden file, [(relative dir, mtime_ns)]) under ``root``.

    The same walk as ``data_fingerprint`` (symlinks followed, hidden entries skipped)."""
    files: list[str] = []
    dirs: list[tuple[str, int]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        with contextlib.suppress(OSError):
            dirs.append((rel_dir, os.stat(directory).st_mtime_ns))
        prefix = f"{rel_dir}/" if rel_dir else ""
        files.extend(prefix + name for name in filenames if not name.startswith("."))
    files.sort()
    return files, dirs


def _probe(job: tuple[str, list[str], list[bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Size, mtime, (height, width) from the header, readable flag for a chunk of files (worker side)."""
    from PIL import Image

    root, rels, images = job
    n = len(rels)
    sizes = np.full(n, -1, np.int64)
    mtimes = np.zeros(n, np.int64)
    hw = np.full((n, 2), -1, np.int32)
    ok = np.ones(n, bool)
    for i, (rel, is_image) in enumerate(zip(rels, images, strict=True)):
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
        except OSError:
            ok[i] = False
            continue
        sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns
        if not is_image:
            continue
        try:
            with Image.open(path) as image:
                width, height = image.size
            hw[i] = (height, width)
        except Exception:  # any failure to parse a header means "unreadable"
            ok[i] = False
    return sizes, mtimes, hw, ok


def _string_table(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode() for s in strings]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets


class StringTable(Sequence[str]):
    """Read-only strings stored as a byte blob + offsets (memory-mapped; nothing per string in RAM)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.blob[int(self.offsets[i]) : int(self.offsets[i + 1])].tobytes().decode()

    def tolist(self) -> list[str]:
        data, offsets = self.blob.tobytes(), self.offsets.tolist()
        return [data[a:b].decode() for a, b in itertools.pairwise(offsets)]


# ----------------------------------------------------------------------------------------------- index
class PoolIndex:
    """An open index file: arrays memory-mapped read-only; pickles as its file name (a few hundred bytes)."""

    def __init__(self, path: Path, root: Path, header: dict[str, Any], verify: bool = True) -> None:
        self.path = Path(path)
        self.root = Path(root)
        self.header = header
        self.meta: dict[str, Any] = header["meta"]
        self._stat = _file_identity(self.path)
        self._arrays = self._map(verify)

    # -- reading
    @classmethod
    def open(cls, path: Path, root: Path, verify: bool = True) -> PoolIndex:
        """Open and check ``path`` (magic, version, size, array SHA-256s); ``IndexDamaged`` if one fails."""
        return cls(path, root, _read_header(path), verify=verify)

    def _map(self, verify: bool) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        data_start = self.header["data_start"]
        size = self._stat[1]
        for name, spec in self.header["arrays"].items():
            end = data_start + spec["offset"] + spec["nbytes"]
            if end > size:
                raise IndexDamaged(f"truncated: array {name!r} ends at byte {end}, the file has {size}")
            shape = tuple(spec["shape"])
            if spec["nbytes"] == 0:
                array = np.zeros(shape, np.dtype(spec["dtype"]))
            else:
                array = np.memmap(self.path, np.dtype(spec["dtype"]), "r", data_start + spec["offset"], shape)
            if verify and hashlib.sha256(np.ascontiguousarray(array).data).hexdigest() != spec["sha256"]:
                raise IndexDamaged(f"array {name!r} does not match its checksum")
            arrays[name] = array
        if verify and size != self.header["file_size"]:
            raise IndexDamaged(f"{size} bytes, expected {self.header['file_size']}")
        return arrays

    def __getstate__(self) -> dict[str, Any]:
        # why: a memmap pickles as a full copy; workers re-map the same file instead (checked unchanged)
        return {"path": self.path, "root": self.root, "header": self.header, "stat": self._stat}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.root, self.header = state["path"], state["root"], state["header"]
        self.meta = self.header["meta"]
        self._stat = _file_identity(self.path)
        if self._stat != state["stat"]:
            raise DataFormatError(self.path, "the pool index the main process opened", "a replaced file")
        self._arrays = self._map(verify=False)

    # -- contents
    def array(self, name: str) -> np.ndarray:
        return self._arrays[name]

    @property
    def files(self) -> StringTable:
        """Relative paths of every file of the pool, sorted (the fingerprint's order)."""
        return StringTable(self._arrays["files_blob"], self._arrays["files_offsets"])

    @property
    def image_dir(self) -> str:
        return self.meta["image_dir"]

    @property
    def train(self) -> np.ndarray:
        """File numbers of the readable training images, in training order."""
        return self._arrays["train"]

    @property
    def labels(self) -> np.ndarray:
        return self._arrays["labels"]

    @property
    def identities(self) -> StringTable:
        return StringTable(self._arrays["ident_blob"], self._arrays["ident_offsets"])

    @property
    def backgrounds(self) -> np.ndarray:
        return self._arrays["backgrounds"]

    @property
    def hw(self) -> np.ndarray:
        return self._arrays["files_hw"]

    @property
    def unreadable(self) -> int:
        return int(self.meta["unreadable_count"])

    @property
    def listing_hash(self) -> str:
        """SHA-256 of the listing (paths, sizes, kinds): the "index hash" of the fingerprint."""
        return self.meta["listing_sha256"]

    def rel(self, file_number: int) -> str:
        start, stop = self._arrays["files_offsets"][file_number : file_number + 2].tolist()
        return self._arrays["files_blob"][start:stop].tobytes().decode()

    # -- checks
    def stale_reason(self) -> str | None:
        """Why the pool no longer matches the index (a folder's mtime, a non-image file), or None."""
        names = StringTable(self._arrays["dirs_blob"], self._arrays["dirs_offsets"]).tolist()
        for rel, mtime in zip(names, self._arrays["dirs_mtime"].tolist(), strict=True):
            try:
                st = os.stat(self.root / rel if rel else self.root)
            except OSError:
                return f"folder {rel or '.'!r} is gone"
            if st.st_mtime_ns != mtime:
                return f"folder {rel or '.'!r} changed (files added, removed or renamed)"
        kinds = self._arrays["files_kind"]
        for number in np.flatnonzero(kinds == OTHER).tolist():
            rel = self.rel(number)
            try:
                st = os.stat(self.root / rel)
            except OSError:
                return f"file {rel!r} is gone"
            recorded = (int(self._arrays["files_size"][number]), int(self._arrays["files_mtime"][number]))
            if (st.st_size, st.st_mtime_ns) != recorded:
                return f"file {rel!r} changed"
        return None

    def foreign_reason(self) -> str | None:
        """Why this index belongs to another pool (its folders are not this pool's), or None."""
        built_for = self.meta["root"]
        if built_for == str(self.root.resolve()):
            return None
        names = StringTable(self._arrays["dirs_blob"], self._arrays["dirs_offsets"])
        missing = next((rel for rel in names if rel and not (self.root / rel).is_dir()), None)
        if missing is None and (self.root / self.image_dir).is_dir():
            return None  # the same pool, moved or copied with its index: the mtimes then decide
        return (
            f"it was built for {built_for} ({self.meta['n_train']} images; folder "
            f"{missing or self.image_dir!r} is not in this pool)"
        )

    # -- fingerprint
    def fingerprint(self, sample: int = FINGERPRINT_SAMPLE, exclude: Collection[str] = ()) -> str:
        """``data_fingerprint`` of the pool from the index: the listing (paths and sizes, as the index holds
        them) plus the content of annotation files and of a fixed sample of others, read now. Equal to the
        walk-based fingerprint of the same folder by construction; ``exclude``d paths count as absent (they
        are annotation files, never in the content sample, so the sample is unchanged)."""
        rels = self.files.tolist()
        sizes = self._arrays["files_size"].tolist()
        if sample == FINGERPRINT_SAMPLE:
            content = set(self._arrays["fp_content"].tolist())
        else:
            sampled = fingerprint_sample(rels, sample)
            content = {
                i for i, rel in enumerate(rels)
                if rel in sampled or PurePosixPath(rel).suffix.lower() in ANNOTATION_SUFFIXES
            }
        digest = hashlib.sha256()
        pending: list[bytes] = []
        for i, (rel, size) in enumerate(zip(rels, sizes, strict=True)):
            if rel in exclude:
                continue
            pending.append(f"{rel}\0{size}\0".encode())
            if i in content:
                digest.update(b"".join(pending))
                pending.clear()
                with (self.root / rel).open("rb") as handle:
                    for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(chunk)
        digest.update(b"".join(pending))
        return digest.hexdigest()[:16]


def _file_identity(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            preamble = handle.read(16)
            if len(preamble) < 16 or preamble[:8] != MAGIC:
                raise IndexDamaged("not a saip-bench pool index (bad magic)")
            length = int.from_bytes(preamble[8:16], "little")
            raw = handle.read(length)
        if len(raw) != length:
            raise IndexDamaged("truncated header")
        header = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise IndexDamaged(f"unreadable header ({exc})") from exc
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise IndexDamaged(f"format version {header.get('version') if isinstance(header, dict) else '?'}, "
                           f"expected {VERSION}")
    return header


def _write_index(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """One file: magic, header length, JSON header, 64-byte aligned arrays; written to a temp file, fsynced
    and renamed, so a reader sees the old index or the new one, never half of one."""
    specs: dict[str, Any] = {}
    offset = 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        arrays[name] = array
        specs[name] = {
            "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset, "nbytes": array.nbytes,
            "sha256": hashlib.sha256(array.data).hexdigest(),
        }
        offset += -(-array.nbytes // ALIGN) * ALIGN
    header = {"version": VERSION, "meta": meta, "arrays": specs, "data_start": 0, "file_size": 0}
    # the header's length depends on data_start/file_size: fix them with room to spare, then pad
    raw = json.dumps(header, sort_keys=True).encode()
    data_start = -(-(16 + len(raw) + 64) // ALIGN) * ALIGN
    header["data_start"] = data_start
    header["file_size"] = data_start + offset
    raw = json.dumps(header, sort_keys=True).encode()
    raw = raw + b" " * (data_start - 16 - len(raw))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + len(raw).to_bytes(8, "little") + raw)
            for name, array in arrays.items():
                handle.seek(data_start + specs[name]["offset"])
                handle.write(array.data)
            handle.truncate(data_start + offset)
            handle.flush()
            os.fsync(handle.fileno())
        from saip_bench.utils import umask_mode

        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------- build
def build_index(
    root: str | Path,
    out: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
    flat: bool = False,
) -> PoolIndex:
    """Walk ``root``, read every image's header in parallel, write the index (``out``, default the first
    writable of ``index_locations``) and open it.

    ``flat``: every image under ``root`` is a "training" image (a plain folder of backgrounds); otherwise
    the pool layout of docs/layouts.md (``images/`` or ``train/``, ``backgrounds/``, annotation files)."""
    root = Path(root)
    tic = time.perf_counter()
    image_dir = "" if flat else pool_image_dir(root)
    if image_dir is None:
        raise DataFormatError(
            root, "a pretraining root with an images/ folder (docs/layouts.md)",
            "no images/ or train/ folder" if root.exists() else "missing folder",
        )
    targets = [out] if out is not None else index_locations(root)
    target = None
    for candidate in targets:
        try:  # created before the walk: the pool's own mtime then already includes it
            candidate.parent.mkdir(parents=True, exist_ok=True)
            if os.access(candidate.parent, os.W_OK):
                target = candidate
                break
        except OSError:
            continue
    if target is None:
        raise DataFormatError(targets[0].parent, "a writable folder for the pool index", "read-only")

    bar = _Progress(progress)
    with bar:
        bar.status(f"listing {root}")
        rels, dirs = walk_files(root)
        n = len(rels)
        prefix = f"{image_dir}/" if image_dir else ""
        kinds = np.full(n, OTHER, np.uint8)
        for i, rel in enumerate(rels):
            if _is_image(rel):
                if rel.startswith(prefix):
                    kinds[i] = TRAIN
                elif not flat and rel.startswith("backgrounds/"):
                    kinds[i] = BACKGROUND
        sizes = np.full(n, -1, np.int64)
        mtimes = np.zeros(n, np.int64)
        hw = np.full((n, 2), -1, np.int32)
        ok = np.ones(n, bool)
        is_image = (kinds != OTHER).tolist()
        chunks = [(str(root), rels[a : a + CHUNK], is_image[a : a + CHUNK]) for a in range(0, n, CHUNK)]
        workers = workers if workers is not None else (os.cpu_count() or 1)
        bar.start("reading image headers", n)
        for start, result in zip(range(0, n, CHUNK), _run_chunks(chunks, workers, n), strict=True):
            stop = start + len(result[0])
            sizes[start:stop], mtimes[start:stop], hw[start:stop], ok[start:stop] = result
            bar.advance(stop - start)
    bad = ~ok & (kinds != OTHER)
    kinds[bad & (kinds == TRAIN)] = BAD_TRAIN
    kinds[bad & (kinds == BACKGROUND)] = BAD_BACKGROUND
    train = sorted(np.flatnonzero(kinds == TRAIN).tolist(), key=lambda i: _parts_key(rels[i]))
    backgrounds = sorted(np.flatnonzero(kinds == BACKGROUND).tolist(), key=lambda i: _parts_key(rels[i]))
    parents = [rels[i].rsplit("/", 1)[0] if "/" in rels[i] else "" for i in train]
    top = image_dir
    parent_names = [p.rsplit("/", 1)[-1] if p != top else None for p in parents]
    identities = sorted({p for p in parent_names if p is not None})
    id_index = {name: k for k, name in enumerate(identities)}
    labels = np.array([id_index[p] if p is not None else -1 for p in parent_names], np.int32)
    sampled = fingerprint_sample(rels)
    fp_content = [
        i for i, rel in enumerate(rels)
        if rel in sampled or PurePosixPath(rel).suffix.lower() in ANNOTATION_SUFFIXES
    ]
    files_blob, files_offsets = _string_table(rels)
    ident_blob, ident_offsets = _string_table(identities)
    dirs_blob, dirs_offsets = _string_table([d for d, _ in dirs])
    listing = hashlib.sha256()
    for array in (files_blob, files_offsets, sizes, kinds):
        listing.update(np.ascontiguousarray(array).data)
    unreadable = [rels[i] for i in np.flatnonzero(bad).tolist()]
    meta = {
        "root": str(root.resolve()),
        "image_dir": image_dir,
        "flat": flat,
        "n_files": n,
        "n_train": len(train),
        "n_backgrounds": len(backgrounds),
        "n_identities": len(identities),
        "n_dirs": len(dirs),
        "unreadable_count": len(unreadable),
        "unreadable_first": unreadable[:20],
        "listing_sha256": listing.hexdigest(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.perf_counter() - tic, 3),
    }
    arrays = {
        "files_blob": files_blob, "files_offsets": files_offsets, "files_size": sizes, "files_mtime": mtimes,
        "files_kind": kinds, "files_hw": hw, "train": np.array(train, np.int64), "labels": labels,
        "ident_blob": ident_blob, "ident_offsets": ident_offsets,
        "backgrounds": np.array(backgrounds, np.int64), "fp_content": np.array(fp_content, np.int64),
        "dirs_blob": dirs_blob, "dirs_offsets": dirs_offsets,
        "dirs_mtime": np.array([m for _, m in dirs], np.int64),
    }
    _write_index(target, meta, arrays)
    if progress:
        log.info("pool index: %d images, %d backgrounds, %d identities in %.1f s -> %s", len(train),
                 len(backgrounds), len(identities), meta["build_seconds"], target)
    if unreadable:  # reported whatever the progress setting: these images will not be trained on
        log.warning("pool index of %s: %d unreadable image(s) skipped (first: %s)", root, len(unreadable),
                    ", ".join(unreadable[:3]))
    return PoolIndex.open(target, root)


def _run_chunks(chunks: list[Any], workers: int, n: int) -> Iterator[Any]:
    """Probe chunks in a process pool (fork: nothing to re-import), in order; inline for small pools."""
    if workers <= 1 or n < PARALLEL_MIN_FILES:
        yield from map(_probe, chunks)
        return
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_probe, chunks)


class _Progress:
    """A rich progress bar on the project's console, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from saip_bench.utils import console

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def status(self, text: str) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(text, total=None)

    def start(self, text: str, total: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(text, total=total)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, count)


# ------------------------------------------------------------------------------------------- find/load
def fresh_index(root: str | Path) -> PoolIndex | None:
    """The index of ``root`` if one exists, is intact, belongs to this pool and is up to date; else None.
    Never builds or writes (safe to call from one rank only, e.g. for the fingerprint)."""
    root = Path(root)
    for candidate in index_locations(root):
        if not candidate.is_file():
            continue
        try:
            index = PoolIndex.open(candidate, root)
        except (IndexDamaged, OSError):
            continue
        if index.foreign_reason() is None and index.stale_reason() is None:
            return index
    return None


def load_index(
    root: str | Path,
    rebuild: bool = False,
    progress: bool = True,
    flat: bool = False,
    workers: int | None = None,
) -> PoolIndex:
    """The index of ``root``: opened when intact and up to date, else (re)built with a message saying why.

    An index that belongs to another pool is refused (``PoolIndexError``). Under ``torch.distributed``
    rank 0 checks and builds while the other ranks wait on a barrier, then open what rank 0 left."""
    root = Path(root)
    rank, world = _dist_rank()
    if world <= 1:
        return _load_or_build(root, rebuild, progress, flat, workers)
    import torch.distributed as dist

    message: list[str | None] = [None]
    failure: Exception | None = None
    if rank == 0:
        try:
            _load_or_build(root, rebuild, progress, flat, workers)
        except Exception as exc:  # re-raised here, reported to the other ranks
            failure, message[0] = exc, str(exc)
    dist.broadcast_object_list(message, src=0)  # also the barrier: every rank waits for rank 0
    if failure is not None:
        raise failure
    if message[0] is not None:
        raise DataFormatError(root, "a pool index built by rank 0", f"rank 0 failed: {message[0]}")
    for candidate in index_locations(root):
        if candidate.is_file():
            with contextlib.suppress(IndexDamaged, OSError):
                return PoolIndex.open(candidate, root)
    raise DataFormatError(index_locations(root)[0], "the pool index rank 0 wrote", "none readable")


def _load_or_build(root: Path, rebuild: bool, progress: bool, flat: bool, workers: int | None) -> PoolIndex:
    if not flat and pool_image_dir(root) is None:
        raise DataFormatError(
            root, "a pretraining root with an images/ folder (docs/layouts.md)",
            "no images/ or train/ folder" if root.exists() else "missing folder",
        )
    if not root.is_dir():
        raise DataFormatError(root, "a folder of images", "missing folder")
    reason = "--rebuild" if rebuild else None
    for candidate in index_locations(root):
        if rebuild or not candidate.is_file():
            continue
        try:
            index = PoolIndex.open(candidate, root)
        except IndexDamaged as exc:
            reason = reason or f"the index {candidate} is damaged ({exc})"
            continue
        foreign = index.foreign_reason()
        if foreign:
            raise PoolIndexError(
                candidate, f"an index of the pool {root}",
                f"{foreign}; delete it or run `saip-bench data index {root} --rebuild`",
            )
        stale = index.stale_reason()
        if stale is None:
            return index
        reason = reason or f"the pool changed since it was indexed: {stale}"
    if reason is not None:  # a rebuild is never silent
        log.info("pool index of %s: %s; rebuilding it", root, reason)
    elif progress:
        log.info("pool index of %s: none yet; building it (once)", root)
    return build_index(root, progress=progress, flat=flat, workers=workers)


def _dist_rank() -> tuple[int, int]:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
