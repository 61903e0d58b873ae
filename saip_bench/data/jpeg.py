"""Decode a JPEG at a reduced size when it is about to be shrunk a lot (PIL's draft mode).

Why: libjpeg can stop its inverse DCT early and emit the image at 1/2, 1/4 or 1/8 of its stored size, which
makes decoding a 1920x1080 frame that is then resized to 256x256 several times cheaper (figures in
docs/performance.md, "JPEG draft decoding"). The pixels differ from a full decode followed by the same
resize (the first halvings happen in the DCT), so a run that uses it says so in its configuration (the
pretraining ``jpeg_draft`` switch, part of the config hash); it is never a silent speed switch.

The rules, kept in this one place:

- the reduction ``s`` is the largest of 8, 4, 2 that leaves the region about to be resized (the whole image
  by default) at least as large as the size it is resized to, on both sides; otherwise 1 (a full decode).
  The draft never removes detail the target size could still show;
- the decoded image is the stored image scaled by exactly ``1/s``: a coordinate ``x`` in stored pixels is
  ``x / s`` in decoded pixels (``Decoded.to_decoded``); libjpeg rounds the decoded size up, so the resize
  takes the exact float region (PIL's ``box``), as ``Image.thumbnail`` does, never the rounded-up size;
- anything that is not a JPEG (PNG, ...) and any call without a target decodes in full, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from saip_bench.errors import DataFormatError

REDUCTIONS = (8, 4, 2)  # what libjpeg's DCT scaling offers below 1 (PIL's draft picks among these)

Size = tuple[int, int]  # (width, height), PIL's order


@dataclass(frozen=True)
class Decoded:
    """An RGB image decoded from ``stored_size`` pixels at ``1 / reduction`` of that size."""

    image: Image.Image
    stored_size: Size
    reduction: int = 1

    def to_decoded(self, coordinates: Sequence[float]) -> tuple[float, ...]:
        """Coordinates (x, y, x, y, ...) in stored pixels -> decoded pixels: divided by ``reduction``,
        exactly (a power of two)."""
        return tuple(float(value) / self.reduction for value in coordinates)

    def resize(self, size: Size, resample: int, region: Sequence[float] | None = None) -> Image.Image:
        """``region`` (x0, y0, x1, y1 in stored pixels; default the whole image) resized to ``size``.

        A full decode crops then resizes (what the loaders did before drafts existed, bit for bit); a draft
        resizes the exact float region of the decoded image."""
        if self.reduction == 1:
            image = self.image if region is None else self.image.crop(tuple(int(v) for v in region))
            return image if image.size == tuple(size) else image.resize(tuple(size), resample)
        whole = (0.0, 0.0, float(self.stored_size[0]), float(self.stored_size[1]))
        return self.image.resize(tuple(size), resample, box=self.to_decoded(region or whole))


def draft_reduction(region_size: Size, target_size: Size) -> int:
    """The largest ``s`` of ``REDUCTIONS`` with ``region_size / s >= target_size`` on both sides, else 1."""
    for reduction in REDUCTIONS:
        if all(region >= reduction * target for region, target in zip(region_size, target_size, strict=True)):
            return reduction
    return 1


def open_rgb(
    path: str | Path, target_size: Size | None = None, region_size: Size | None = None
) -> Decoded:
    """Decode ``path`` as RGB. With ``target_size`` (the size the image, or its ``region_size`` part, is
    resized to next) a JPEG is decoded at ``draft_reduction``; without, or for any other format, in full.

    A missing or unreadable file raises ``DataFormatError`` naming it."""
    try:
        with Image.open(path) as image:
            stored: Size = image.size
            reduction = 1
            if target_size is not None and isinstance(image, JpegImagePlugin.JpegImageFile):
                reduction = draft_reduction(region_size or stored, target_size)
                # asking for stored // s makes PIL pick exactly s (stored // (stored // s) is in [s, 2s));
                # PIL declines (None) for a file of several tiles: then a full decode
                request = (stored[0] // reduction, stored[1] // reduction)
                if reduction > 1 and image.draft("RGB", request) is None:
                    reduction = 1
                if reduction > 1:
                    expected = (-(-stored[0] // reduction), -(-stored[1] // reduction))
                    if image.size != expected:  # pragma: no cover - a PIL whose draft rule changed
                        raise RuntimeError(f"PIL drafted {path} to {image.size}, expected {expected}")
            image.load()
            return Decoded(image.convert("RGB"), stored, reduction)
    except FileNotFoundError as exc:
        raise DataFormatError(path, "an image file", "nothing at that path") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataFormatError(path, "a readable image", f"{type(exc).__name__}: {exc}") from exc
