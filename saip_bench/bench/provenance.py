"""Provenance of a record: code revision, package versions, data fingerprints, device.

Why: a score that cannot be traced to the code, data and settings that produced it is not publishable;
resume also uses these to tell a finished unit from a stale one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

from saip_bench.specs import repo_root

PACKAGES = (
    "saip-bench", "torch", "torchvision", "timm", "numpy", "scipy", "pandas", "scikit-learn",
    "pycocotools", "xtcocotools", "mmpose", "mmengine", "pillow", "opencv-python-headless",
)
# Annotation-like files are hashed whatever their size; other files (images) only when small.
ANNOTATION_SUFFIXES = {
    ".json", ".odgt", ".txt", ".mat", ".csv", ".pkl", ".pickle", ".yaml", ".yml", ".npy", ".npz",
}
SMALL_FILE_BYTES = 64 * 1024


@functools.cache
def code_revision(root: Path | None = None) -> str:
    """``git`` commit of the checkout, ``+dirty`` when tracked package files differ, else ``unknown``."""
    root = root or repo_root()
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


def data_fingerprint(root: str | Path) -> str:
    """Content fingerprint of a dataset folder (16 hex chars).

    Every file contributes its relative path and size; annotation files (any size) and small files are
    hashed by content too. Large images are identified by path + size only, which keeps a pass over
    real datasets (COCO, MSMT17) to seconds; a same-size in-place edit of a large image is not detected.
    """
    root = Path(root)
    if not root.exists():
        return "missing"
    digest = hashlib.sha256()
    files: list[tuple[str, Path]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(directory) / name
            files.append((path.relative_to(root).as_posix(), path))
    for relative, path in sorted(files):
        size = path.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        if size <= SMALL_FILE_BYTES or path.suffix.lower() in ANNOTATION_SUFFIXES:
            with path.open("rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
