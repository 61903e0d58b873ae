"""Deterministic writers and mask encoders of the synthetic world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from pycocotools import mask as mask_utils

from saip_bench.data.synth.io import mask_bbox, mask_polygons, mask_rle_uncompressed, write_mat


def _blobs(seed: int, h: int = 60, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), bool)
    for _ in range(3):
        cy, cx, r = rng.uniform(10, h - 10), rng.uniform(10, w - 10), rng.uniform(4, 12)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return mask


def test_uncompressed_rle_decodes_to_the_same_mask() -> None:
    for seed in range(5):
        mask = _blobs(seed)
        mask[0, 0] = seed % 2 == 0  # both starting cases (first run background / foreground)
        rle = mask_rle_uncompressed(mask)
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"]))
        assert (decoded.astype(bool) == mask).all()
        assert sum(rle["counts"]) == mask.size


def test_polygons_rasterise_close_to_the_mask_and_stay_in_the_box() -> None:
    for seed in range(5):
        mask = _blobs(seed)
        polys = mask_polygons(mask)
        rles = mask_utils.frPyObjects(polys, *mask.shape)
        raster = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        iou = (raster & mask).sum() / (raster | mask).sum()
        assert iou > 0.8
        x, y, w, h = mask_bbox(mask)
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
        coords = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polys])
        assert coords[:, 0].min() >= x and coords[:, 0].max() <= x + w
    assert mask_bbox(np.zeros((4, 4), bool)) is None


def test_mat_files_have_no_timestamp(tmp_path: Path) -> None:
    data = {"labels": np.eye(3, dtype=np.uint8)}
    write_mat(tmp_path / "a.mat", data)
    write_mat(tmp_path / "b.mat", data)
    assert (tmp_path / "a.mat").read_bytes() == (tmp_path / "b.mat").read_bytes()
    assert b"Created on: (fixed" in (tmp_path / "a.mat").read_bytes()[:116]
    assert (scipy.io.loadmat(tmp_path / "a.mat")["labels"] == np.eye(3)).all()
