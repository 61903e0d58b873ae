"""Top-down crops made on the training device: decode the photos there and warp a whole batch at once.

Why: on an H200 the pose fine-tune unit waited for its loader most of every step. A worker spent most
of a sample's time decoding a whole COCO photo to crop one person from it (~4 of ~6 ms per sample on one
core), so 14 workers could not feed the GPU. In this mode a worker reads the file's bytes and runs
mmpose's geometry (centre, scale, flip, half body, random scale/rotation/shift) on no pixels; the
device decodes the batch (nvJPEG through ``torchvision.io.decode_jpeg``) and samples every crop with
one ``grid_sample`` per chunk. The geometry, keypoints and targets are mmpose's, exactly as in the worker
path; the pixels differ from ``cv2.warpAffine``'s only by its fixed-point rounding (cv2 snaps sampling
positions to 1/32 pixel, here to 1/1024), see ``tests/tasks/dense/test_device_crops.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from saip_bench.devices import host_to_device
from saip_bench.errors import DataFormatError

JPEG_MAGIC = b"\xff\xd8"


def warp_matrix(center: np.ndarray, scale: np.ndarray, rotation: float, output_wh: tuple[int, int],
                udp: bool) -> np.ndarray:
    """mmpose's 2x3 forward warp (image -> crop) of ``TopdownAffine``, UDP or not."""
    from mmpose.structures.bbox import get_udp_warp_matrix, get_warp_matrix

    build = get_udp_warp_matrix if udp else get_warp_matrix
    return np.asarray(build(np.asarray(center, np.float32), np.asarray(scale, np.float32), float(rotation),
                            output_size=output_wh), dtype=np.float64)


def read_bytes(path: str | Path) -> torch.Tensor:
    """The file's bytes as a uint8 tensor (what a loader worker hands to the device)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DataFormatError(path, "an image file", "nothing at that path") from exc
    except OSError as exc:
        raise DataFormatError(path, "a readable image", f"{type(exc).__name__}: {exc}") from exc
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode_on_host(blob: torch.Tensor, path: str | Path) -> torch.Tensor:
    """PIL decode, as ``load_rgb`` does (PNGs, CMYK JPEGs, anything nvJPEG refuses)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob.numpy().tobytes())) as image:
            image.load()
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataFormatError(path, "a readable image", f"{type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def decode_images(blobs: Sequence[torch.Tensor], paths: Sequence[str | Path],
                  device: torch.device | str) -> list[torch.Tensor]:
    """Encoded files -> (3, H, W) uint8 RGB tensors on ``device``: JPEGs in one batched decode there, the
    rest (or a batch the decoder refuses) on the host one by one, so a bad file is named."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(blobs)
    jpegs = [i for i, blob in enumerate(blobs) if blob.numel() > 2 and bytes(blob[:2].tolist()) == JPEG_MAGIC]
    if jpegs:
        try:
            decoded = decode_jpeg([blobs[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one file the decoder refuses: decode each on the host to name it
            decoded = None
        if decoded is not None:
            for i, image in zip(jpegs, decoded, strict=True):
                out[i] = image
    for i, image in enumerate(out):
        if image is None:
            out[i] = _decode_on_host(blobs[i], paths[i]).to(device)
    return [image for image in out if image is not None]


def warp_crops(images: Sequence[torch.Tensor], matrices: torch.Tensor, flips: torch.Tensor,
               output_hw: tuple[int, int], chunk: int = 64) -> torch.Tensor:
    """(B, 3, h, w) uint8 crops: image i, mirrored when ``flips[i]`` (as mmpose's ``RandomFlip`` mirrors
    the photo before the warp), then warped by the forward matrix ``matrices[i]`` (B, 2, 3) with bilinear
    sampling and black outside the photo, as ``cv2.warpAffine(..., INTER_LINEAR)`` with a zero border.

    Pixel centres sit on integer coordinates (cv2's convention). Chunks of ``chunk`` photos are padded
    with zeros (what a zero border samples anyway) to a power-of-two canvas, and each sampling position
    is snapped to 1/1024 pixel. Why both: ``grid_sample`` takes positions normalised by the canvas size
    and scales them back. For a position on that 1/1024 grid in a power-of-two canvas of up to 8,192
    pixels a side, every step of that float32 round trip is exact, so a crop is the same bits whichever
    photos share its chunk. With a canvas of the chunk's largest photo and unsnapped positions, a crop
    moved by a grey level with its neighbours (seen on an AVX-512 machine).
    """
    height, width = output_hw
    count = len(images)
    if count == 0:
        return torch.zeros((0, 3, height, width), dtype=torch.uint8)
    device = images[0].device
    forward = matrices.detach().to("cpu", torch.float64)
    full = torch.cat([forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(count, 1, 3)], 1)
    inverse = torch.linalg.inv(full)[:, :2]  # crop pixel -> photo pixel
    sizes = torch.tensor([[image.shape[-1], image.shape[-2]] for image in images], dtype=torch.float64)
    mirror = flips.detach().to("cpu", torch.bool)
    # a mirrored photo's column x is the original's column (w - 1 - x): fold that into the inverse
    inverse[mirror, 0] = -inverse[mirror, 0]
    inverse[mirror, 0, 2] += sizes[mirror, 0] - 1
    # the sampling grid is built on the device: a batch's grid is far larger than its photos' headers
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                            torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    xs, ys = xs.reshape(1, -1), ys.reshape(1, -1)
    inverse = host_to_device(inverse.reshape(count, 6, 1).float(), device)
    crops = []
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        part = images[start:stop]
        pad_h = _power_of_two_above(max(int(image.shape[-2]) for image in part))
        pad_w = _power_of_two_above(max(int(image.shape[-1]) for image in part))
        canvas = torch.zeros((stop - start, 3, pad_h, pad_w), dtype=torch.float32, device=device)
        for k, image in enumerate(part):
            canvas[k, :, : image.shape[-2], : image.shape[-1]] = image
        rows = inverse[start:stop]
        # photo coordinates by a product and a sum per element (a matmul's rounding may follow the batch)
        source_x = _snapped(rows[:, 0] * xs + rows[:, 1] * ys + rows[:, 2])
        source_y = _snapped(rows[:, 3] * xs + rows[:, 4] * ys + rows[:, 5])
        grid = torch.stack([(2 * source_x + 1) / pad_w - 1, (2 * source_y + 1) / pad_h - 1], -1)
        grid = grid.reshape(stop - start, height, width, 2)
        sampled = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        crops.append(sampled.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(crops)


def _power_of_two_above(size: int) -> int:
    """The smallest power of two >= ``size``: dividing a position by it and multiplying back is exact."""
    return 1 << max(0, size - 1).bit_length()


def _snapped(positions: torch.Tensor) -> torch.Tensor:
    """Positions rounded to 1/1024 pixel, in place (the grid that makes ``warp_crops``' round trip exact)."""
    return positions.mul_(1024).round_().div_(1024)
