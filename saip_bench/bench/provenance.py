"""Provenance of a record: code revision, package versions, data fingerprints, device.

Why: a score that cannot be traced to the code, data and settings that produced it is not publishable;
resume also uses these to tell a finished unit from a stale one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import subprocess
from collections.abc import Collection
from pathlib import Path

import torch

from saip_bench.data.pool_index import (
    ANNOTATION_SUFFIXES,
    FINGERPRINT_SAMPLE,
    fingerprint_sample,
    fresh_index,
    walk_files,
)
from saip_bench.specs import checkout_root

PACKAGES = (
    "saip-bench", "torch", "torchvision", "timm", "numpy", "scipy", "pandas", "scikit-learn",
    "pycocotools", "xtcocotools", "mmpose", "mmengine", "pillow", "opencv-python-headless",
)
# Annotation-like files (ANNOTATION_SUFFIXES) are hashed whatever their size; of the other files (images)
# a fixed-size sample (FINGERPRINT_SAMPLE). One definition, shared with the pool index, whose fingerprint
# must equal the walk's.


@functools.cache
def code_revision(root: Path | None = None) -> str:
    """``git`` commit of the checkout, ``+dirty`` when tracked package files differ, else ``unknown``
    (also for an installed copy: the git repository around site-packages, if any, is not saip-bench's)."""
    root = root or checkout_root()
    if root is None:
        return "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
             "saip_bench", "tasks"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit or "unknown"


@functools.cache
def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def data_fingerprint(root: str | Path, sample: int = FINGERPRINT_SAMPLE,
                     exclude: Collection[str] = ()) -> str:
    """Content fingerprint of a dataset folder (16 hex chars), in seconds even for COCO or LUPerson.

    The listing of every file (relative path and size) is hashed; annotation files (any size) are hashed by
    content, and so are ``sample`` other files chosen by a hash of their path (stable across machines and
    copies). Why bounded: reading every small file meant reading nearly every person crop of a pretraining
    pool, on every rank. A same-size in-place edit of an unsampled image is not detected. File times are
    left out on purpose: a copy made without them (rsync without -t) must keep the fingerprint, or every
    checkpoint cache key and record would change.

    A pretraining pool with an up-to-date pool index (``saip-bench data index``) is fingerprinted from it:
    the index's listing plus the same content sample, without walking or ``stat``-ing the pool. The value is
    the same as the walk's, so a checkpoint key does not depend on whether the index existed yet.

    ``exclude``: relative paths left out, as if absent (a pool's ``keypoints.json``, which only HAP reads:
    making it must not invalidate every other method's checkpoints).
    """
    root = Path(root)
    if not root.exists():
        return "missing"
    index = fresh_index(root)
    if index is not None:
        return index.fingerprint(sample, exclude)
    rels, _dirs = walk_files(root)
    rels = [rel for rel in rels if rel not in exclude]
    sampled = fingerprint_sample(rels, sample)
    digest = hashlib.sha256()
    for relative in rels:
        path = root / relative
        size = path.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        if path.suffix.lower() in ANNOTATION_SUFFIXES or relative in sampled:
            with path.open("rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
