"""Aspect-preserving affine crops: labels round-trip, aspect kept, flips swap sides, logits map back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import saip_bench  # noqa: F401  (registers the torchvision ops before anything imports torchvision)
from saip_bench.errors import SpecError
from saip_bench.tasks.dense.affine import AffineAugment, logits_to_original, warp_matrix, warp_pair

PAIRS = [[14, 15], [16, 17], [18, 19]]
SIZE = (96, 64)  # (h, w) of the crop


def inside_crop(matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """Original pixels whose centre lands inside the crop (away from its last half pixel)."""
    ys, xs = np.mgrid[0:height, 0:width]
    u = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    v = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return (u >= 0) & (u <= SIZE[1] - 1) & (v >= 0) & (v <= SIZE[0] - 1)


@pytest.mark.parametrize("scale,rotation,flip", [(1.0, 0.0, False), (0.8, 37.0, False), (1.2, -55.0, True)])
def test_affine_crop_round_trips_labels_inside_the_crop(scale, rotation, flip):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 20, size=(30, 20)).astype(np.uint8)
    image = rng.integers(0, 255, size=(30, 20, 3)).astype(np.uint8)
    crop_image, crop = warp_pair(image, label, SIZE, scale, rotation, flip, PAIRS)
    assert crop_image.shape == (*SIZE, 3) and crop.shape == SIZE
    assert (crop == 255).any() == (rotation != 0)  # outside the image (here: only when rotated): ignored
    inverse = warp_matrix(20, 30, SIZE, scale, rotation, inverse=True)
    back = cv2.warpAffine(crop, inverse, (20, 30), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=255)
    expected = label
    if flip:  # the crop was taken from the mirrored image with left/right classes swapped
        lookup = np.arange(256, dtype=np.uint8)
        for left, right in PAIRS:
            lookup[left], lookup[right] = right, left
        expected = lookup[label[:, ::-1]]
    mask = inside_crop(warp_matrix(20, 30, SIZE, scale, rotation), 30, 20)
    assert mask.mean() > 0.4  # a real share of the image is compared
    assert np.array_equal(back[mask], expected[mask])


def test_the_whole_image_fits_with_its_aspect_kept():
    for width, height in ((20, 30), (50, 30), (40, 100)):
        matrix = warp_matrix(width, height, SIZE)
        assert matrix[0, 0] == pytest.approx(matrix[1, 1]) and matrix[0, 1] == pytest.approx(0.0)
        corners = np.array([[0, 0, 1], [width - 1, height - 1, 1]], dtype=np.float64) @ matrix.T
        assert (corners >= -1e-6).all() and (corners[:, 0] <= SIZE[1] + 1e-6).all()
        assert (corners[:, 1] <= SIZE[0] + 1e-6).all()
        # one side fills the crop: the box was widened or heightened, never squashed
        span = corners[1] - corners[0]
        assert max(span[0] / SIZE[1], span[1] / SIZE[0]) == pytest.approx(1.0, abs=1e-6)


def test_flip_swaps_left_and_right_classes():
    label = np.zeros((10, 10), np.uint8)
    label[:, :5] = 14  # left arm on the image's left
    _, crop = warp_pair(np.zeros((10, 10, 3), np.uint8), label, (40, 40), flip=True, flip_pairs=PAIRS)
    inner = crop[crop != 255]
    assert set(np.unique(inner)) == {0, 15}
    assert (crop[:, 30] == 15).all() and (crop[:, 5] == 0).all()  # the right arm is now on the right


def test_draws_stay_in_the_recipe_ranges_and_are_seeded():
    augment = AffineAugment()
    draws = [augment.draw(torch.Generator().manual_seed(s)) for s in range(400)]
    scales, rotations, flips = (np.array(x) for x in zip(*draws, strict=True))
    assert scales.min() >= 0.75 and scales.max() <= 1.25 and scales.std() > 0.1
    assert np.abs(rotations).max() <= 60 and 0.3 < (rotations == 0).mean() < 0.5  # rotated with p 0.6
    assert 0.4 < flips.mean() < 0.6
    assert augment.draw(torch.Generator().manual_seed(3)) == draws[3]
    assert not any(augment.draw(torch.Generator().manual_seed(s), flip_allowed=False)[2] for s in range(20))


def test_bad_augment_params_name_the_key():
    with pytest.raises(SpecError, match="augment: unknown keys"):
        AffineAugment.from_params({"scale": 0.2}, "parsing/lip protocols.finetune.params")
    with pytest.raises(SpecError, match="augment.flip_prob"):
        AffineAugment.from_params({"flip_prob": 2}, "parsing/lip protocols.finetune.params")


@pytest.mark.parametrize("stride", [1, 4])
def test_logits_map_back_through_the_inverse_affine(stride):
    """Logits that hold each crop point's own coordinates sample back to the forward map of every
    original pixel (bilinear sampling is exact on a linear function), at full and at stride-4 resolution."""
    width, height = 37, 45
    h, w = SIZE[0] // stride, SIZE[1] // stride
    centres_x = (torch.arange(w, dtype=torch.float32) + 0.5) * stride - 0.5
    centres_y = (torch.arange(h, dtype=torch.float32) + 0.5) * stride - 0.5
    logits = torch.stack([centres_x.expand(h, w), centres_y[:, None].expand(h, w)])
    back = logits_to_original(logits, SIZE, width, height).numpy()
    assert back.shape == (2, height, width)
    matrix = warp_matrix(width, height, SIZE)
    ys, xs = np.mgrid[0:height, 0:width]
    u = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    v = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    margin = (stride - 1) / 2
    keep = (u >= margin) & (u <= SIZE[1] - 1 - margin) & (v >= margin) & (v <= SIZE[0] - 1 - margin)
    assert keep.mean() > 0.8
    assert np.allclose(back[0][keep], u[keep], atol=1e-3) and np.allclose(back[1][keep], v[keep], atol=1e-3)
