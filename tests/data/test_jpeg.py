"""JPEG draft decoding (``saip_bench/data/jpeg.py``): the reduction rule, exact coordinates, the full path."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saip_bench.data.jpeg import REDUCTIONS, draft_reduction, open_rgb
from saip_bench.errors import DataFormatError

STORED = (1923, 1081)  # odd sides: libjpeg rounds the drafted size up, the exact extent is not an integer
MARKER = (1803, 1001, 64, 48)  # x, y, width, height of a white block near the bottom-right corner


def _centroid(image: Image.Image) -> tuple[float, float]:
    brightness = np.asarray(image, dtype=np.float64).mean(axis=-1)
    ys, xs = np.mgrid[: brightness.shape[0], : brightness.shape[1]]
    total = brightness.sum()
    return float((brightness * xs).sum() / total), float((brightness * ys).sum() / total)


@pytest.fixture(scope="module")
def marker_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pixels = np.zeros((STORED[1], STORED[0], 3), np.uint8)
    x, y, w, h = MARKER
    pixels[y : y + h, x : x + w] = 255
    folder = tmp_path_factory.mktemp("jpeg")
    paths = {"jpeg": folder / "marker.jpg", "png": folder / "marker.png"}
    Image.fromarray(pixels).save(paths["jpeg"], quality=95)
    Image.fromarray(pixels).save(paths["png"])
    return paths


def test_the_reduction_never_takes_the_region_below_the_target_and_is_the_largest_that_does() -> None:
    sides = (1, 7, 64, 127, 128, 255, 256, 257, 511, 512, 1023, 1080, 1920, 4000)
    regions, targets = itertools.product(sides, sides), itertools.product(sides[:9], sides[:9])
    for region, target in itertools.product(regions, targets):
        reduction = draft_reduction(region, target)
        assert reduction in (1, *REDUCTIONS)
        if reduction > 1:  # a draft keeps the region at least the target (smaller ones are upscaled in full)
            assert all(r / reduction >= t for r, t in zip(region, target, strict=True)), (region, target)
        if reduction < max(REDUCTIONS):  # the next one up would go below the target on some side
            assert any(r / (2 * reduction) < t for r, t in zip(region, target, strict=True)), (region, target)


def test_a_drafted_jpeg_is_at_least_the_target_and_coordinates_map_back_exactly(marker_images) -> None:
    target = (256, 144)
    decoded = open_rgb(marker_images["jpeg"], target)
    assert decoded.reduction == 4 and decoded.stored_size == STORED
    assert decoded.image.size == (481, 271)  # ceil(1923 / 4), ceil(1081 / 4)
    assert all(d >= t for d, t in zip(decoded.image.size, target, strict=True))
    stored_box = (1803.0, 1001.0, 1867.0, 1049.0)
    assert tuple(v * decoded.reduction for v in decoded.to_decoded(stored_box)) == stored_box  # powers of 2
    # the marker lands where the stored -> target scale puts it, as with a full decode (within 0.05 px;
    # resizing the rounded-up decoded size instead would put it 0.4 px off)
    x, y, w, h = MARKER
    expected = ((x + w / 2) * target[0] / STORED[0] - 0.5, (y + h / 2) * target[1] / STORED[1] - 0.5)
    full = open_rgb(marker_images["jpeg"])
    for image in (decoded.resize(target, Image.BILINEAR), full.resize(target, Image.BILINEAR)):
        cx, cy = _centroid(image)
        assert abs(cx - expected[0]) < 0.05 and abs(cy - expected[1]) < 0.05, ((cx, cy), expected)


def test_a_region_is_resized_from_the_same_stored_pixels_with_or_without_the_draft(marker_images) -> None:
    region, target = (1500.0, 700.0, 1923.0, 1081.0), (100, 90)  # 423 x 381 stored -> /4 still >= target
    drafted = open_rgb(marker_images["jpeg"], target, region_size=(423, 381))
    full = open_rgb(marker_images["jpeg"])
    assert drafted.reduction == 4 and full.reduction == 1
    drafted_centroid = _centroid(drafted.resize(target, Image.BILINEAR, region))
    full_centroid = _centroid(full.resize(target, Image.BILINEAR, region))
    assert max(abs(a - b) for a, b in zip(drafted_centroid, full_centroid, strict=True)) < 0.1


def test_not_a_jpeg_or_no_target_decodes_in_full_exactly_as_before(marker_images) -> None:
    png = open_rgb(marker_images["png"], (64, 36))
    assert png.reduction == 1 and png.image.size == STORED
    with Image.open(marker_images["png"]) as reference:
        assert np.array_equal(np.asarray(png.image), np.asarray(reference.convert("RGB")))
        resized = reference.convert("RGB").resize((64, 36), Image.BILINEAR)
    assert np.array_equal(np.asarray(png.resize((64, 36), Image.BILINEAR)), np.asarray(resized))
    jpeg = open_rgb(marker_images["jpeg"])
    assert jpeg.reduction == 1 and jpeg.image.size == STORED
    small_target = open_rgb(marker_images["jpeg"], (1000, 600))  # 1923 / 2 < 1000: no draft
    assert small_target.reduction == 1


def test_missing_and_corrupt_files_name_the_file(tmp_path) -> None:
    with pytest.raises(DataFormatError, match="nothing at that path"):
        open_rgb(tmp_path / "absent.jpg", (8, 8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataFormatError, match="broken.jpg"):
        open_rgb(broken, (8, 8))
