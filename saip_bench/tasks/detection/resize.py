"""Aspect-preserving resizes of the detection recipes and the zero-padded batches they make.

Why one module: CrowdDet (CrowdHuman) and mmdet's Mask R-CNN (Fashionpedia) both resize whole images with
their aspect kept and pad each batch to a size divisor. Their size rules differ, and so does their
rounding, and each is kept to the letter here (tests pin both):

- ``ShortSideResize`` (CrowdDet): the short side to ``short`` unless the long side would pass
  ``max_long``; sides rounded with Python's ``round`` (half to even), divisor 64;
- ``LongSideResize`` (mmdet ``Resize(keep_ratio=True)``): the long side to a scale (drawn per image in
  training), sides rounded half up as mmcv does, divisor 32.

The rest is one copy: the padded canvas, zero padding at the bottom / right, the collate that keeps each
image's own size, normalisation that leaves the padding at 0, the multi-scale loader, and the optional
JPEG draft decode of a whole photo about to be shrunk (``load_resized``). Images cross the loader as uint8
(a quarter of the float bytes: a CrowdHuman sample 2.7 MB instead of 10.9 MB in
``benchmarks/finetune_loader.py``) and become [0, 1] floats on the device (``devices.unit_float``, the
same numbers as ``/ 255``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from saip_bench.data.jpeg import open_rgb
from saip_bench.errors import DataFormatError
from saip_bench.specs import StrictModel
from saip_bench.tasks.common import INTERPOLATION, epoch_batches, load_rgb, normalize, pil_to_uint8

HW = tuple[int, int]  # (height, width), the tensors' order
Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]
PaddedBatch = tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[HW]]

# ---- the two size rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShortSideResize:
    """CrowdDet's resize: scale so the short side is ``short`` unless the long side would pass ``max_long``;
    batches are padded (bottom / right) to multiples of ``divisor``."""

    short: int
    max_long: int
    divisor: int = 64

    def resized_hw(self, hw: HW) -> HW:
        height, width = hw
        scale = min(self.short / min(height, width), self.max_long / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def padded_hw(self, sizes: Sequence[HW]) -> HW:
        return padded_size(sizes, self.divisor)


class LongSideResize(StrictModel):
    """mmdet's ``Resize(keep_ratio=True)``: the long side to ``scale`` (x a ratio drawn from ``ratio_range``
    in training), then the batch zero-padded to a multiple of ``size_divisor``."""

    train_scale: int = Field(gt=0)
    ratio_range: tuple[float, float] = (1.0, 1.0)
    test_scale: int = Field(gt=0)
    size_divisor: int = Field(default=32, gt=0)


def long_side_size(hw: HW, scale: float) -> HW:
    """(height, width) with the long side at ``scale``, aspect kept (mmcv rounds half up)."""
    factor = scale / max(hw)
    return max(1, int(hw[0] * factor + 0.5)), max(1, int(hw[1] * factor + 0.5))


def train_scale(resize: LongSideResize, generator: torch.Generator) -> int:
    """One draw of the training long side: ``train_scale`` x a uniform ratio in ``ratio_range``."""
    low, high = resize.ratio_range
    ratio = low + (high - low) * float(torch.rand((), generator=generator))
    return int(resize.train_scale * ratio)


# ---- padded batches -------------------------------------------------------------------------------------


def padded_size(sizes: Sequence[HW], divisor: int) -> HW:
    """The batch canvas: the largest height and width, each rounded up to a multiple of ``divisor``."""
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def pad_to_canvas(images: Sequence[torch.Tensor], canvas: HW) -> torch.Tensor:
    """CHW images -> one (B, C, *canvas) batch, each image top-left, zero-padded at the bottom / right."""
    batch = images[0].new_zeros((len(images), images[0].shape[0], *canvas))
    for out, image in zip(batch, images, strict=True):
        out[:, :image.shape[-2], :image.shape[-1]] = image
    return batch


def pad_images(images: Sequence[torch.Tensor], divisor: int) -> torch.Tensor:
    """CHW images of different sizes -> one batch on the smallest canvas that is a multiple of ``divisor``."""
    return pad_to_canvas(images, padded_size([image_hw(im) for im in images], divisor))


def image_hw(image: torch.Tensor) -> HW:
    return int(image.shape[-2]), int(image.shape[-1])


def padded_collate(divisor: int) -> Callable[[list[Sample]], PaddedBatch]:
    """A loader's collate for aspect-kept samples: (padded images, targets, each image's own (h, w))."""

    def collate(samples: list[Sample]) -> PaddedBatch:
        images = [image for image, _ in samples]
        return pad_images(images, divisor), [target for _, target in samples], [image_hw(im) for im in images]

    return collate


def normalize_padded(images: torch.Tensor, sizes: Sequence[HW]) -> torch.Tensor:
    """ImageNet-normalised batch whose padding stays 0 (mmdet normalises each image, then pads)."""
    out = normalize(images)
    valid = torch.zeros_like(out[:, :1])
    for row, (height, width) in zip(valid, sizes, strict=True):
        row[:, :height, :width] = 1.0
    return out * valid


def keep_ratio_batches(
    records: list[dict[str, Any]],
    load: Callable[[dict[str, Any], int], Sample],
    flip: Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]],
    resize: LongSideResize,
    batch_size: int,
    steps_per_epoch: int,
    generator: torch.Generator,
    device: torch.device,
    num_workers: int = 0,
) -> Callable[[int], Iterator[PaddedBatch]]:
    """Multi-scale fine-tune batches: a fresh shuffle each epoch, one long side drawn per image
    (``load(record, scale)``), mirrored with p = 0.5, zero-padded to ``size_divisor``. Every draw comes from
    ``generator`` in the main process, so the batches do not depend on the worker count."""

    def sample(key: tuple[int, int, bool]) -> Sample:
        image, target = load(records[key[0]], key[1])
        return (image.flip(-1), flip(target, image.shape[-1])) if key[2] else (image, target)

    def epoch_keys(epoch: int) -> Iterator[list[tuple[int, int, bool]]]:
        order = torch.randperm(len(records), generator=generator)
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            index = order[start:start + batch_size].tolist()
            scales = [train_scale(resize, generator) for _ in index]
            mirror = (torch.rand(len(index), generator=generator) < 0.5).tolist()
            yield [(int(i), s, bool(m)) for i, s, m in zip(index, scales, mirror, strict=True)]

    return epoch_batches(sample, epoch_keys, steps_per_epoch, padded_collate(resize.size_divisor),
                         num_workers, device)


# ---- decoding a photo about to be resized ---------------------------------------------------------------


def load_resized(path: str | Path, stored_hw: HW | None, size: HW | Callable[[HW], HW],
                 jpeg_draft: bool = False) -> tuple[torch.Tensor, HW]:
    """The image at ``path`` resized (bilinear) to ``size`` (or ``size(stored height, width)``), as a
    (3, h, w) uint8 tensor, and the stored (height, width) its coordinates refer to.

    Without ``jpeg_draft``: a full decode then ``pil_to_uint8``'s resize, bit for bit as the loaders did
    before drafts. With it, the size comes from ``stored_hw`` (the annotation's width / height, which the
    caller's boxes and polygons refer to) before anything is decoded, and a JPEG at least twice that size
    decodes at 1/2-1/8 (``data/jpeg.py``); a stored image of another size than the annotation says is a
    ``DataFormatError`` naming the file, as drafting would otherwise hide the mismatch."""
    if not jpeg_draft:
        image = load_rgb(path)
        original = (image.height, image.width)
        hw = size(original) if callable(size) else size
        return pil_to_uint8(image, hw), original
    if stored_hw is None:
        raise ValueError("load_resized: jpeg_draft needs the annotation's (height, width)")
    hw = size(stored_hw) if callable(size) else size
    decoded = open_rgb(path, target_size=(hw[1], hw[0]))
    if decoded.stored_size != (stored_hw[1], stored_hw[0]):
        raise DataFormatError(path, f"an image of {stored_hw[1]}x{stored_hw[0]} pixels (the annotation's "
                                    "width x height)", f"{decoded.stored_size[0]}x{decoded.stored_size[1]}")
    resized = decoded.resize((hw[1], hw[0]), INTERPOLATION["bilinear"])
    return pil_to_uint8(resized), stored_hw
