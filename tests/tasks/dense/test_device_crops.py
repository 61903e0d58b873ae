"""Device-made top-down crops against mmpose's worker path (cv2.warpAffine after RandomFlip's mirror)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from saip_bench.errors import DataFormatError
from saip_bench.tasks.dense.device_crops import decode_images, read_bytes, warp_crops, warp_matrix


def smooth_photo(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like image: low-frequency colour fields plus a few hard edges (where rounding shows)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image[height // 3: height // 2, width // 4: width // 2] = (250, 20, 40)
    return image


CASES = [  # centre, scale (w, h), rotation, flip, udp
    ((200.0, 150.0), (120.0, 160.0), 0.0, False, True),
    ((310.5, 240.25), (300.0, 400.0), 25.0, False, True),
    ((100.0, 380.0), (90.0, 120.0), -40.0, True, True),
    ((600.0, 20.0), (200.0, 266.7), 10.0, True, False),  # mostly outside the photo
    ((320.0, 240.0), (48.0, 64.0), 0.0, False, False),  # upsampled 4x
]


@pytest.mark.parametrize("case", CASES)
def test_warp_matches_cv2_within_its_fixed_point_rounding(case):
    (cx, cy), (sw, sh), rotation, flip, udp = case
    photo = smooth_photo(480, 640, seed=3)
    matrix = warp_matrix(np.array([cx, cy]), np.array([sw, sh]), rotation, (192, 256), udp)
    source = cv2.flip(photo, 1) if flip else photo
    expected = cv2.warpAffine(source, matrix, (192, 256), flags=cv2.INTER_LINEAR)
    crops = warp_crops([torch.from_numpy(photo).permute(2, 0, 1)], torch.from_numpy(matrix)[None],
                       torch.tensor([flip]), (256, 192))
    got = crops[0].permute(1, 2, 0).numpy().astype(int)
    difference = np.abs(got - expected.astype(int))
    # cv2 snaps each sampling position to 1/32 pixel: a few levels at the hard edges, ~0 elsewhere
    assert difference.mean() < 0.35, difference.mean()
    assert np.percentile(difference, 99) <= 2
    assert difference.max() <= 12


def test_a_batch_of_different_sizes_equals_one_by_one():
    photos = [smooth_photo(480, 640, 1), smooth_photo(300, 200, 2), smooth_photo(640, 427, 3)]
    tensors = [torch.from_numpy(p).permute(2, 0, 1) for p in photos]
    matrices = torch.stack([torch.from_numpy(warp_matrix(np.array([c, c]), np.array([150.0, 200.0]), r,
                                                         (96, 128), True))
                            for c, r in ((150.0, 0.0), (190.0, 30.0), (90.0, -15.0))])
    flips = torch.tensor([False, True, True])
    batch = warp_crops(tensors, matrices, flips, (128, 96), chunk=2)
    for i in range(3):
        alone = warp_crops([tensors[i]], matrices[i:i + 1], flips[i:i + 1], (128, 96))
        assert torch.equal(batch[i], alone[0])
    # the padded right/bottom of the smaller photos must sample as black, not as a neighbour's pixels
    photo = tensors[1]
    shifted = torch.from_numpy(warp_matrix(np.array([200.0, 150.0]), np.array([150.0, 200.0]), 0.0,
                                           (96, 128), True))[None]  # right half beyond the 200-px photo
    alone = warp_crops([photo], shifted, torch.tensor([False]), (128, 96))
    padded = warp_crops([photo, tensors[0]], torch.cat([shifted, shifted]), torch.tensor([False, False]),
                        (128, 96))
    assert torch.equal(padded[0], alone[0])
    assert int(alone[0][:, :, 60:].max()) == 0


def test_a_crop_is_the_same_bits_whichever_photos_share_its_chunk():
    """Photos of many sizes, boxes partly or wholly outside, fractional sampling positions: each crop
    alone, in chunks of 3 and in one chunk of 9 (once a grey level apart on an AVX-512 machine, when the
    positions went through a normalisation by the chunk's padded size)."""
    rng = np.random.default_rng(7)
    sizes = [(int(rng.integers(40, 700)), int(rng.integers(40, 700))) for _ in range(9)]
    tensors = [torch.from_numpy(smooth_photo(h, w, seed)).permute(2, 0, 1)
               for seed, (h, w) in enumerate(sizes)]
    matrices = torch.stack([torch.from_numpy(warp_matrix(
        np.array([rng.uniform(-50, w + 50), rng.uniform(-50, h + 50)]), rng.uniform(30, 400, 2),
        rng.uniform(-45, 45), (48, 64), bool(rng.integers(2)))) for h, w in sizes])
    flips = torch.from_numpy(rng.random(9) < 0.5)
    together = warp_crops(tensors, matrices, flips, (64, 48), chunk=9)
    in_threes = warp_crops(tensors, matrices, flips, (64, 48), chunk=3)
    for i in range(9):
        alone = warp_crops([tensors[i]], matrices[i:i + 1], flips[i:i + 1], (64, 48))[0]
        assert torch.equal(together[i], alone) and torch.equal(in_threes[i], alone), i


def test_decode_matches_pil_and_names_a_bad_file(tmp_path):
    photo = smooth_photo(120, 90, 5)
    jpeg, png, bad = tmp_path / "a.jpg", tmp_path / "b.png", tmp_path / "c.jpg"
    Image.fromarray(photo).save(jpeg, quality=90)
    Image.fromarray(photo).save(png)
    bad.write_bytes(b"\xff\xd8not really a jpeg")
    paths = [jpeg, png]
    images = decode_images([read_bytes(p) for p in paths], paths, "cpu")
    assert torch.equal(images[0], torch.from_numpy(np.asarray(Image.open(jpeg).convert("RGB")).copy())
                       .permute(2, 0, 1))
    assert torch.equal(images[1], torch.from_numpy(photo).permute(2, 0, 1))
    with pytest.raises(DataFormatError, match="c.jpg"):
        decode_images([read_bytes(jpeg), read_bytes(bad)], [jpeg, bad], "cpu")
    with pytest.raises(DataFormatError, match="missing.jpg"):
        read_bytes(tmp_path / "missing.jpg")


def test_grayscale_jpeg_decodes_to_three_channels(tmp_path):
    path = tmp_path / "g.jpg"
    buffer = io.BytesIO()
    Image.fromarray(smooth_photo(64, 48, 7)[..., 0]).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())
    (image,) = decode_images([read_bytes(path)], [path], "cpu")
    assert image.shape == (3, 64, 48)
    assert torch.equal(image, torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())
                       .permute(2, 0, 1))
