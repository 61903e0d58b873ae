"""Byte-deterministic writers (fixed encoder settings, no timestamps) and contact sheets."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io
from PIL import Image, ImageDraw

JPEG_QUALITY = 92
_MAT_HEADER = (
    b"MATLAB 5.0 MAT-file, Platform: saip-bench synthetic world, Created on: (fixed for determinism)"
)


def save_image(path: Path, rgb: np.ndarray) -> None:
    """JPEG/PNG/BMP by suffix with fixed settings (PIL writes no time or EXIF unless asked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(rgb))
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        img.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False)
    elif suffix == ".png":
        img.save(path, format="PNG", compress_level=6)
    else:
        img.save(path)


def save_label_png(path: Path, labels: np.ndarray) -> None:
    """Single-channel (mode L) PNG of raw ids, as LIP/CIHP distribute them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(labels.astype(np.uint8)), mode="L").save(
        path, format="PNG", compress_level=6
    )


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(data, sort_keys=True, indent=indent, separators=(",", ": ") if indent else (", ", ": "))
    )


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def write_mat(path: Path, variables: dict[str, Any]) -> None:
    """MATLAB v5 via scipy.io.savemat, with the timestamped header text replaced by a fixed one."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, format="5", do_compression=False, oned_as="column")
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")[:116]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def write_pickle(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))


# ------------------------------------------------------------------------------------- label helpers


def mask_bbox(mask: np.ndarray) -> list[float] | None:
    """COCO [x, y, w, h] enclosing every pixel of ``mask`` (pixel edges, so w = x1 - x0 + 1)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours as COCO polygons (pixel-corner coordinates; each with at least 3 points)."""
    m = np.ascontiguousarray(mask.astype(np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64) + 0.5  # through pixel centres
        if len(pts) < 3:  # a line or a dot: the outline of its pixels instead
            x0, y0 = pts.min(0) - 0.5
            x1, y1 = pts.max(0) + 0.5
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        polys.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polys


def mask_rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major run lengths, starting with a background run)."""
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return {"counts": [int(r) for r in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


# ------------------------------------------------------------------------------------ contact sheets

PALETTE = np.array(
    [
        [0, 0, 0],
        [128, 0, 0],
        [255, 85, 0],
        [0, 85, 0],
        [170, 0, 51],
        [255, 85, 0],
        [0, 0, 85],
        [0, 119, 221],
        [85, 85, 0],
        [0, 85, 85],
        [85, 51, 0],
        [52, 86, 128],
        [0, 128, 0],
        [0, 0, 255],
        [51, 170, 221],
        [0, 255, 255],
        [85, 255, 170],
        [170, 255, 85],
        [255, 255, 0],
        [255, 170, 0],
    ],
    dtype=np.uint8,
)
PALETTE[2] = (255, 0, 0)


def colourise(labels: np.ndarray) -> np.ndarray:
    out = PALETTE[np.minimum(labels, 19)]
    out[labels == 255] = 255
    return out


def draw_keypoints(image: np.ndarray, kps: np.ndarray, skeleton: list[list[int]] | None = None) -> np.ndarray:
    out = image.copy()
    if skeleton:
        for a, b in skeleton:
            pa, pb = kps[a - 1], kps[b - 1]
            if pa[2] > 0 and pb[2] > 0:
                cv2.line(out, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), (255, 255, 255), 1)
    for x, y, v in kps:
        if v > 0:
            cv2.circle(out, (int(x), int(y)), 2, (0, 255, 0) if v == 2 else (255, 0, 0), -1)
    return out


def draw_box(image: np.ndarray, box: list[float], colour: tuple[int, int, int]) -> None:
    x, y, w, h = box
    cv2.rectangle(image, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), colour, 1)


def contact_sheet(
    path: Path, tiles: list[tuple[np.ndarray, str]], tile_h: int | None = None, columns: int = 6
) -> None:
    """A grid of annotated samples with a caption line under each (PNG); scenes get taller tiles."""
    if not tiles:
        return
    if tile_h is None:
        tile_h = int(min(224, max(128, tiles[0][0].shape[0])))
    resized = []
    for img, text in tiles:
        scale = tile_h / img.shape[0]
        resized.append(
            (
                cv2.resize(img, (max(1, int(img.shape[1] * scale)), tile_h), interpolation=cv2.INTER_NEAREST),
                text,
            )
        )
    cell_w = max(max(r[0].shape[1] for r in resized), 96)
    columns = max(2, min(columns, 1100 // cell_w))
    rows = (len(resized) + columns - 1) // columns
    text_h = 24
    sheet = Image.new("RGB", (cell_w * min(columns, len(resized)), rows * (tile_h + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (img, text) in enumerate(resized):
        r, c = divmod(i, columns)
        x, y = c * cell_w, r * (tile_h + text_h)
        sheet.paste(Image.fromarray(img), (x, y))
        chars = max(8, cell_w // 6)
        for k, line in enumerate([text[:chars], text[chars : 2 * chars]]):
            draw.text((x + 2, y + tile_h + 1 + 11 * k), line, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", compress_level=6)
