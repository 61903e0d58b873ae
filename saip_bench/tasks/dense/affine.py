"""Aspect-preserving affine crops for human parsing (the SCHP/CE2P input pipeline) and their inverse.

Why: the recipe never squashes an image to the input size. The whole image's box is widened or heightened
to the input's aspect ratio (zero padding outside the image, ignore 255 in the labels), randomly scaled,
rotated and mirrored at training time, and warped by one affine map; at test time the same box (no
augmentation) is warped in, and the predicted logits are warped back to the original image by the
inverse map. The matrix comes from mmpose's ``get_warp_matrix`` (the maintained form of the HRNet/SCHP
``get_affine_transform``); the warps are OpenCV's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from saip_bench.errors import SpecError

IGNORE = 255


@dataclass(frozen=True)
class AffineAugment:
    """The recipe's random draws: scale x clip(1 + s N, 1 - s, 1 + s); rotation clip(r N, +-2r) with
    probability ``rotation_prob``; horizontal flip with probability ``flip_prob``."""

    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str) -> AffineAugment:
        """From a protocol's ``params.augment`` mapping; a bad key or value is a SpecError naming it."""
        values = dict(params or {})
        unknown = set(values) - {"scale_factor", "rotation_factor", "rotation_prob", "flip_prob"}
        if unknown:
            raise SpecError(f"{where}.augment: unknown keys {sorted(unknown)} (expected scale_factor, "
                            "rotation_factor, rotation_prob, flip_prob)")
        out = cls(**{k: float(v) for k, v in values.items()})
        if not 0 <= out.scale_factor < 1:
            raise SpecError(f"{where}.augment.scale_factor: expected a value in [0, 1), "
                            f"got {out.scale_factor}")
        for name in ("rotation_prob", "flip_prob"):
            if not 0 <= getattr(out, name) <= 1:
                raise SpecError(f"{where}.augment.{name}: expected a probability, got {getattr(out, name)}")
        if out.rotation_factor < 0:
            raise SpecError(f"{where}.augment.rotation_factor: expected >= 0, got {out.rotation_factor}")
        return out

    def draw(self, generator: torch.Generator, flip_allowed: bool = True) -> tuple[float, float, bool]:
        """(scale multiplier, rotation in degrees, flip) from ``generator`` (the same on every rank)."""
        noise = torch.randn(2, generator=generator).tolist()
        uniform = torch.rand(2, generator=generator).tolist()
        scale = float(np.clip(1.0 + noise[0] * self.scale_factor, 1.0 - self.scale_factor,
                              1.0 + self.scale_factor))
        rotation = 0.0
        if uniform[0] <= self.rotation_prob:
            rotation = float(np.clip(noise[1] * self.rotation_factor, -2 * self.rotation_factor,
                                     2 * self.rotation_factor))
        flip = flip_allowed and uniform[1] <= self.flip_prob
        return scale, rotation, flip


def whole_image_box(width: int, height: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(centre, box size) of the whole image widened or heightened to the aspect of ``size`` = (h, w)."""
    box_w, box_h = float(width - 1), float(height - 1)
    center = np.array([box_w * 0.5, box_h * 0.5], dtype=np.float32)
    aspect = size[1] / size[0]
    if box_w > aspect * box_h:
        box_h = box_w / aspect
    elif box_w < aspect * box_h:
        box_w = box_h * aspect
    return center, np.array([box_w, box_h], dtype=np.float32)


def warp_matrix(width: int, height: int, size: tuple[int, int], scale: float = 1.0,
                rotation: float = 0.0, inverse: bool = False) -> np.ndarray:
    """2x3 map from original pixels to crop pixels (``inverse``: crop -> original) for an image of
    ``width`` x ``height`` warped to ``size`` = (h, w) with a box scale multiplier and rotation (deg)."""
    from mmpose.structures.bbox import get_warp_matrix

    center, box = whole_image_box(width, height, size)
    return get_warp_matrix(center, box * scale, rotation, (size[1], size[0]), inv=inverse).astype(np.float64)


def warp_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int], scale: float = 1.0,
              rotation: float = 0.0, flip: bool = False,
              flip_pairs: Sequence[Sequence[int]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) label map -> their crops of ``size``: the image bilinear with
    zero border, the labels nearest with border 255. ``flip`` mirrors both first and swaps each
    left/right class pair in the labels."""
    if flip:
        lookup = np.arange(256, dtype=np.uint8)
        for left, right in flip_pairs:
            lookup[left], lookup[right] = right, left
        image, label = image[:, ::-1], lookup[label[:, ::-1]]
    height, width = label.shape
    matrix = warp_matrix(width, height, size, scale, rotation)
    out_size = (size[1], size[0])
    crop = cv2.warpAffine(np.ascontiguousarray(image), matrix, out_size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    crop_label = cv2.warpAffine(np.ascontiguousarray(label), matrix, out_size, flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
    return crop, crop_label


def warp_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The test-time crop: the whole image, aspect kept, no augmentation (bilinear, zero border)."""
    height, width = image.shape[:2]
    return cv2.warpAffine(np.ascontiguousarray(image), warp_matrix(width, height, size), (size[1], size[0]),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def logits_to_original(logits: torch.Tensor, crop_size: tuple[int, int], width: int,
                       height: int) -> torch.Tensor:
    """(C, h, w) logits predicted for a test crop of ``crop_size`` = (H, W) (any output stride) -> (C,
    height, width) logits of the original image, sampled bilinearly through the inverse affine map.

    Pixel centres: original pixel (x, y) lands at crop point M (x, y); a crop point u sits at
    normalised coordinate (2u + 1) / W - 1 on the logit map (align_corners=False, the same convention
    as the bilinear upsampling of the plain path)."""
    matrix = torch.as_tensor(warp_matrix(width, height, crop_size), dtype=torch.float32, device=logits.device)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=logits.device),
                            torch.arange(width, dtype=torch.float32, device=logits.device), indexing="ij")
    u = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    v = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    grid = torch.stack([(2 * u + 1) / crop_size[1] - 1, (2 * v + 1) / crop_size[0] - 1], dim=-1)
    return F.grid_sample(logits[None].float(), grid[None], mode="bilinear", padding_mode="border",
                         align_corners=False)[0]
