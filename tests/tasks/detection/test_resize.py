"""The detection recipes' aspect-preserving resizes (detection/resize.py): CrowdDet's short-side rule and
mmdet's long-side rule with their own rounding, padded batches, and the optional JPEG draft decode of a
whole photo (off: bit for bit the full decode; on: the target size, close to the full decode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saip_bench.devices import unit_float
from saip_bench.errors import DataFormatError
from saip_bench.tasks.common import load_rgb, pil_to_tensor
from saip_bench.tasks.detection.resize import (
    ShortSideResize,
    load_resized,
    long_side_size,
    normalize_padded,
    pad_images,
    pad_to_canvas,
    padded_collate,
)


def test_keep_ratio_resize_sizes_and_padding():
    resize = ShortSideResize(800, 1400, 64)
    assert resize.resized_hw((600, 800)) == (800, 1067)     # short side to 800
    assert resize.resized_hw((1000, 2000)) == (700, 1400)   # long side capped at 1400
    assert resize.resized_hw((2000, 1000)) == (1400, 700)   # portrait alike
    assert resize.padded_hw([(800, 1067), (700, 1400)]) == (832, 1408)


def test_the_two_rules_keep_their_own_rounding():
    """A side of x.5 after scaling: CrowdDet's ``round`` goes to the even integer, mmcv rounds half up."""
    assert ShortSideResize(5, 100).resized_hw((4, 5)) == (5, 6)      # 6.25 -> 6
    assert ShortSideResize(3, 100).resized_hw((2, 3)) == (3, 4)      # 4.5 -> 4 (half to even)
    assert long_side_size((2, 4), 3) == (2, 3)                        # 1.5 -> 2 (half up)


def test_padded_batches_keep_each_image_top_left_and_zero_padding():
    images = [torch.rand(3, 50, 70), torch.rand(3, 64, 40)]
    batch = pad_images(images, 32)
    assert batch.shape == (2, 3, 64, 96)
    assert torch.equal(batch[0, :, :50, :70], images[0]) and batch[0, :, 50:].abs().sum() == 0
    normed = normalize_padded(batch, [(50, 70), (64, 40)])
    assert normed[1, :, :, 40:].abs().sum() == 0 and normed[1, :, :, :40].abs().sum() > 0


def test_the_padded_collate_keeps_targets_and_each_images_own_size():
    images = [torch.rand(3, 50, 70), torch.rand(3, 64, 40)]
    batch, targets, sizes = padded_collate(64)([(images[0], {"a": 0}), (images[1], {"a": 1})])
    assert batch.shape == (2, 3, 64, 128) and sizes == [(50, 70), (64, 40)]
    assert [t["a"] for t in targets] == [0, 1]
    assert torch.equal(batch, pad_to_canvas(images, (64, 128)))


# ---- JPEG draft decoding of whole photos ----------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1200x900 photo as JPEG and PNG (gradients plus a sharp-edged block) and a small JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    height, width = 900, 1200
    ys, xs = np.mgrid[:height, :width]
    pixels = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256], -1).astype(np.uint8)
    pixels[300:450, 300:600] = (200, 30, 90)
    out = {"jpeg": folder / "photo.jpg", "png": folder / "photo.png", "small": folder / "small.jpg"}
    Image.fromarray(pixels).save(out["jpeg"], quality=90)
    Image.fromarray(pixels).save(out["png"])
    Image.fromarray(pixels[:300, :400]).save(out["small"], quality=90)
    return out


def _long_side(scale: int):
    return lambda hw: long_side_size(hw, scale)


def test_without_draft_the_image_is_the_full_decode_bit_for_bit(photos):
    for path in photos.values():
        for scale in (200, 448, 1024):
            image, original = load_resized(path, None, _long_side(scale))
            full = load_rgb(path)
            assert original == (full.height, full.width)
            assert image.dtype == torch.uint8  # a quarter of the float bytes through the loader
            assert torch.equal(unit_float(image), pil_to_tensor(full, long_side_size(original, scale)))


def test_a_draft_has_the_target_size_and_stays_close_to_the_full_decode(photos):
    """Tolerance on the [0, 1] pixels: mean absolute difference under 2 / 255, 99th percentile under 24 / 255
    (the DCT halvings against a bilinear shrink of the full decode; measured at most 0.7 / 255 and 14 / 255,
    the larger ones on the sharp wrap of the third channel's ramp)."""
    for scale in (448, 600, 300):  # reductions 2, 2 and 4 of the 1200x900 JPEG
        drafted, original = load_resized(photos["jpeg"], (900, 1200), _long_side(scale), jpeg_draft=True)
        full, _ = load_resized(photos["jpeg"], None, _long_side(scale))
        assert original == (900, 1200)
        assert drafted.shape == full.shape == (3, *long_side_size(original, scale))
        assert not torch.equal(drafted, full)  # a different decode: why the protocol's switch is hashed
        difference = (unit_float(drafted) - unit_float(full)).abs()
        assert difference.mean() < 2 / 255 and difference.flatten().quantile(0.99) < 24 / 255


def test_a_png_or_a_jpeg_under_twice_the_target_goes_the_full_decode_path(photos):
    for path, stored, scale in ((photos["png"], (900, 1200), 448), (photos["small"], (300, 400), 300),
                                (photos["jpeg"], (900, 1200), 1024)):
        drafted, _ = load_resized(path, stored, _long_side(scale), jpeg_draft=True)
        assert torch.equal(drafted, load_resized(path, None, _long_side(scale))[0])


def test_a_draft_refuses_an_image_whose_size_is_not_the_annotations(photos):
    with pytest.raises(DataFormatError, match=r"photo\.jpg.*900x1200.*1200x900"):
        load_resized(photos["jpeg"], (1200, 900), _long_side(448), jpeg_draft=True)
