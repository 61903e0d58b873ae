"""Tiny pretraining folders of random JPEGs in the ``pretrain`` layout of docs/layouts.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_pretrain_folder(
    root: Path, identities: int = 4, per_identity: int = 4, backgrounds: int = 3
) -> Path:
    rng = np.random.default_rng(0)
    keypoints = {}
    for ident in range(identities):
        folder = root / "images" / f"{ident:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=3)
        for j in range(per_identity):
            height, width = int(rng.integers(90, 140)), int(rng.integers(40, 70))
            noise = rng.integers(-40, 40, size=(height, width, 3))
            array = np.clip(base + noise, 0, 255).astype(np.uint8)
            array[height // 4 : height // 2, width // 4 : 3 * width // 4] = 255 - base  # a "torso" blob
            Image.fromarray(array).save(folder / f"{ident:04d}_{j:02d}.jpg", quality=90)
            keypoints[f"{ident:04d}/{ident:04d}_{j:02d}.jpg"] = [[width / 2, height / 2, 2]] * 17
    (root / "backgrounds").mkdir(parents=True, exist_ok=True)
    for k in range(backgrounds):
        array = rng.integers(0, 255, size=(100, 120, 3)).astype(np.uint8)
        Image.fromarray(array).save(root / "backgrounds" / f"bg_{k}.jpg")
    (root / "keypoints.json").write_text(json.dumps(keypoints))
    return root


@pytest.fixture(scope="session")
def pretrain_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pretrain_folder(tmp_path_factory.mktemp("pretrain"))


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: on a shared, oversubscribed 2-core machine OpenMP barriers made two threads
    30x slower than one for these micro models (measured); results do not depend on it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
