"""Batched view generation for pretraining: crops, colour augmentation, rescaling, masks, canvases.

Why batched: the authors build every view per image with PIL inside the data loader; here the loader
only decodes and resizes each image once, and all views of a batch are made with a few tensor ops
(``affine_grid``/``grid_sample`` crops, per-sample colour factors as broadcast tensors, grouped-conv
blur) on the training device. Random *parameters* are drawn per sample from ``sample_rngs(seeds)`` so
that a sample gets the same views whatever the batch composition or the number of processes.

Deviations from the release (all documented in docs/pretraining.md):
- crops are resampled bilinearly/bicubically by ``grid_sample`` without PIL's antialiasing;
- colour jitter applies brightness, contrast, saturation, hue in a fixed order (torchvision: random
  order) and hue is a rotation in YIQ space (torchvision: HSV shift);
- Gaussian blur uses a kernel of ``2 * ceil(3 sigma) + 1`` taps (PIL: box approximation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from saip_bench.devices import constant, host_to_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- randomness
def sample_rngs(seeds: torch.Tensor) -> list[np.random.Generator]:
    """One numpy generator per sample, from the per-sample seeds the loader provides."""
    return [np.random.default_rng(int(s)) for s in seeds.reshape(-1).tolist()]


def step_rng(step_seed: torch.Tensor | int) -> np.random.Generator:
    return np.random.default_rng(int(step_seed))


# ------------------------------------------------------------------------------------------------ crops
def rrc_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[float, float, float, float]:
    """torchvision ``RandomResizedCrop.get_params`` (10 tries, then centre crop); (top, left, h, w) px."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return float(top), float(left), float(h), float(w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return float((height - h) // 2), float((width - w) // 2), float(h), float(w)


def crop_resize(
    images: torch.Tensor,
    boxes: torch.Tensor,
    out_size: tuple[int, int],
    flip: torch.Tensor | None = None,
    mode: str = "bicubic",
) -> torch.Tensor:
    """Crop ``boxes`` = (top, left, h, w) in pixels of ``images`` (B, C, H, W) and resize to ``out_size``.

    ``boxes`` (N*B, 4) holds N crops of every image, view-major (rows n*B .. n*B+B-1 are crop n of each
    image), and so does the result; ``flip`` (N*B,) mirrors horizontally. One ``affine_grid`` +
    ``grid_sample`` call for all of them: the N crops of an image lie one above the other in a single
    sampling grid, so the images are not copied N times. Each output pixel is sampled as by N calls.
    """
    batch, channels, height, width = images.shape
    crops = boxes.shape[0] // batch
    if crops < 1 or crops * batch != boxes.shape[0]:
        raise ValueError(f"boxes has {boxes.shape[0]} rows, not a multiple of the {batch} images")
    boxes = host_to_device(boxes.to(torch.float32), images.device)  # queued: no wait for the device
    top, left, box_h, box_w = boxes.unbind(1)
    theta = torch.zeros(crops * batch, 2, 3, device=images.device)
    sign = torch.ones(crops * batch, device=images.device)
    if flip is not None:
        sign = torch.where(host_to_device(flip, images.device), -1.0, 1.0)
    theta[:, 0, 0] = box_w / width * sign
    theta[:, 0, 2] = (2 * left + box_w) / width - 1
    theta[:, 1, 1] = box_h / height
    theta[:, 1, 2] = (2 * top + box_h) / height - 1
    out_h, out_w = out_size
    grid = F.affine_grid(theta, [crops * batch, channels, out_h, out_w], align_corners=False)
    if crops > 1:  # (N*B, h, w, 2) -> (B, N*h, w, 2): image b's N grids stacked vertically
        grid = grid.view(crops, batch, out_h, out_w, 2).transpose(0, 1)
        grid = grid.reshape(batch, crops * out_h, out_w, 2)
    out = F.grid_sample(images, grid.to(images.dtype), mode=mode, padding_mode="border", align_corners=False)
    if crops > 1:  # (B, C, N*h, w) -> (N*B, C, h, w), view-major
        out = out.view(batch, channels, crops, out_h, out_w).permute(2, 0, 1, 3, 4)
        out = out.reshape(crops * batch, channels, out_h, out_w)
    return out.clamp(0.0, 1.0) if mode == "bicubic" else out


def crop_params(
    rngs: Sequence[np.random.Generator],
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One RandomResizedCrop box (B, 4) and flip (B,) per sample, drawn on the host: every generator
    draws its box first, then its flip."""
    boxes, flips = _crop_draws(rngs, height, width, scale, ratio, flip_p)
    return torch.tensor(boxes, dtype=torch.float32).view(-1, 4), torch.tensor(flips, dtype=torch.bool)


def _crop_draws(rngs: Sequence[np.random.Generator], height: int, width: int, scale: tuple[float, float],
                ratio: tuple[float, float], flip_p: float) -> tuple[list[tuple[float, ...]], list[bool]]:
    """``crop_params`` as Python lists, so that several views' draws become one tensor each."""
    boxes = [rrc_params(rng, height, width, scale, ratio) for rng in rngs]
    return boxes, [bool(rng.random() < flip_p) for rng in rngs]


def random_resized_crop(
    images: torch.Tensor,
    rngs: Sequence[np.random.Generator],
    out_size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_p: float = 0.5,
    mode: str = "bicubic",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched RandomResizedCrop + horizontal flip; returns (views, boxes (B, 4))."""
    boxes, flips = crop_params(rngs, *images.shape[-2:], scale, ratio, flip_p)
    return crop_resize(images, boxes, out_size, flips, mode), boxes


def resize_nearest(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate`` default (nearest), as the release rescales views."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="nearest")


def scaled_size(
    size: tuple[int, int], factor: float, rounding: str = "pad", patch: int = 16
) -> tuple[int, int]:
    """``size * factor``; ``rounding="round16"`` rounds each side to the nearest multiple of ``patch``
    (min one patch), ``"pad"`` keeps the exact size (the ViT zero-pads it to whole patches)."""
    height, width = (max(1, round(s * factor)) for s in size)
    if rounding == "round16":
        height = max(patch, round(height / patch) * patch)
        width = max(patch, round(width / patch) * patch)
    elif rounding != "pad":
        raise ValueError(f"rounding must be 'pad' or 'round16', got {rounding!r}")
    return height, width


# ------------------------------------------------------------------------------------------------ colour
def _gray(images: torch.Tensor) -> torch.Tensor:
    weights = constant(_GRAY, images.device, images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _per_sample(values: Sequence[float], images: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=images.dtype, device=images.device).view(-1, 1, 1, 1)


_GRAY = (0.299, 0.587, 0.114)
_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_FROM_YIQ = tuple(map(tuple, torch.linalg.inv(torch.tensor(_TO_YIQ, dtype=torch.float32)).tolist()))


def _hue_rotate(images: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate chroma in YIQ space by ``2 pi hue`` (hue in [-0.5, 0.5])."""
    # device constants (no copy per call); inverted once on the host: a GPU inverse checks (syncs)
    to_yiq = constant(_TO_YIQ, images.device, images.dtype)
    from_yiq = constant(_FROM_YIQ, images.device, images.dtype)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, images)
    angle = (hue.view(-1) * 2 * math.pi).view(-1, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    i_new = yiq[:, 1] * cos - yiq[:, 2] * sin
    q_new = yiq[:, 1] * sin + yiq[:, 2] * cos
    yiq = torch.stack([yiq[:, 0], i_new, q_new], dim=1)
    return torch.einsum("ij,bjhw->bihw", from_yiq, yiq)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """Per-sample Gaussian blur (separable, reflect padding) with one grouped convolution per axis.

    The kernel radius is ``ceil(3 * max_sigma)`` (the augmentation's upper bound, so a sample's result
    does not depend on the other samples in its batch).
    """
    batch, channels, height, width = images.shape
    max_sigma = float(sigmas.max()) if max_sigma is None else max_sigma
    radius = max(1, math.ceil(3 * max_sigma))
    radius = min(radius, min(height, width) - 1)
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigmas.view(-1, 1).float() ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(images.dtype)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B*C, K)
    x = images.reshape(1, batch * channels, height, width)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return x.reshape(batch, channels, height, width)


@dataclass(frozen=True)
class ColorAugment:
    """DINO's photometric pipeline with per-sample probabilities; ``apply`` works on a batch in [0, 1]."""

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0

    def apply(self, images: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        """``render(images, draw(rngs))``."""
        return self.render(images, self.draw(rngs))

    def draw(self, rngs: Sequence[np.random.Generator]) -> list[dict[str, float | bool]]:
        """Every sample's random decisions, one generator per sample (drawn on the host)."""
        return [self._draw(rng) for rng in rngs]

    def render(self, images: torch.Tensor, draws: Sequence[dict[str, float | bool]]) -> torch.Tensor:
        """The batch (B, 3, H, W) in [0, 1] with ``draws[i]`` applied to image i.

        Why host-side decisions: every random draw is made on the host first, copied to the device in
        one transfer, and which ops run at all is decided from the host copy. A ``bool(tensor.any())``
        per op was a device-to-host sync per op: 30 a SAIP micro-step (make_saip_views)."""
        if len(draws) != images.shape[0]:
            raise ValueError(f"{len(draws)} colour draws for {images.shape[0]} images")
        x = images
        columns = ("jitter", "b", "c", "s", "h", "gray", "solar")
        host = torch.tensor([[float(d[k]) for k in columns] for d in draws], dtype=torch.float32)
        params = host_to_device(host, x.device)
        column = {k: params[:, i].view(-1, 1, 1, 1) for i, k in enumerate(columns)}
        any_set = {k: any(bool(d[k]) for d in draws) for k in ("jitter", "gray", "solar")}
        if any_set["jitter"]:
            y = x * column["b"].to(x.dtype)
            y = y.clamp(0, 1)
            mean = _gray(y).mean(dim=(2, 3), keepdim=True)
            y = ((y - mean) * column["c"].to(x.dtype) + mean).clamp(0, 1)
            gray = _gray(y)
            y = ((y - gray) * column["s"].to(x.dtype) + gray).clamp(0, 1)
            y = _hue_rotate(y, column["h"].to(x.dtype)).clamp(0, 1)
            x = torch.where(column["jitter"] > 0, y, x)
        if any_set["gray"]:
            x = torch.where(column["gray"] > 0, _gray(x).expand_as(x), x)
        blur_index = [i for i, d in enumerate(draws) if d["blur"]]
        if blur_index:
            index = host_to_device(torch.tensor(blur_index), x.device)
            sigmas = host_to_device(torch.tensor([draws[i]["sigma"] for i in blur_index]), x.device)
            x = x.index_copy(0, index, gaussian_blur(x.index_select(0, index), sigmas, self.blur_sigma[1]))
        if any_set["solar"]:
            x = torch.where((column["solar"] > 0) & (x >= 0.5), 1.0 - x, x)
        return x

    def _draw(self, rng: np.random.Generator) -> dict[str, float | bool]:
        return {
            "jitter": bool(rng.random() < self.jitter_p),
            "b": float(rng.uniform(1 - self.brightness, 1 + self.brightness)),
            "c": float(rng.uniform(1 - self.contrast, 1 + self.contrast)),
            "s": float(rng.uniform(1 - self.saturation, 1 + self.saturation)),
            "h": float(rng.uniform(-self.hue, self.hue)),
            "gray": bool(rng.random() < self.grayscale_p),
            "blur": bool(rng.random() < self.blur_p),
            "sigma": float(rng.uniform(*self.blur_sigma)),
            "solar": bool(rng.random() < self.solarize_p),
        }


def augmented_crops(
    images: torch.Tensor,
    rngs: Sequence[np.random.Generator],
    augments: Sequence[ColorAugment],
    out_size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_p: float = 0.5,
    mode: str = "bicubic",
) -> list[torch.Tensor]:
    """One view per entry of ``augments``: a RandomResizedCrop + flip of every image, then that colour
    pipeline. The draws and the pixels are those of ``augment.apply(random_resized_crop(...))`` called
    once per view, in order.

    Why: each such pair is ~100 operators whatever the batch (on a GPU, ~100 kernel launches paid by the
    host); here the crops of all views are one ``crop_resize`` and each run of equal pipelines one
    ``render`` (SAIP's 7 local crops, DINO's 8: one pass instead of 7 or 8).
    """
    if not augments:
        return []
    height, width = images.shape[-2:]
    boxes: list[tuple[float, ...]] = []
    flips: list[bool] = []
    draws: list[list[dict[str, float | bool]]] = []
    for augment in augments:  # per generator: box, flip, colour of view 1, then of view 2, ...
        view_boxes, view_flips = _crop_draws(rngs, height, width, scale, ratio, flip_p)
        boxes += view_boxes
        flips += view_flips
        draws.append(augment.draw(rngs))
    crops = crop_resize(images, torch.tensor(boxes, dtype=torch.float32).view(-1, 4), out_size,
                        torch.tensor(flips, dtype=torch.bool), mode)
    batch = images.shape[0]
    views: list[torch.Tensor] = []
    start = 0
    while start < len(augments):  # a run of equal pipelines renders in one pass
        stop = start + 1
        while stop < len(augments) and augments[stop] == augments[start]:
            stop += 1
        run = augments[start].render(crops[start * batch:stop * batch],
                                     [d for view in draws[start:stop] for d in view])
        views.extend(run.split(batch))
        start = stop
    return views


GLOBAL1_AUG = ColorAugment(blur_p=1.0)
GLOBAL2_AUG = ColorAugment(blur_p=0.1, solarize_p=0.2)
LOCAL_AUG = ColorAugment(blur_p=0.5)


def override_colour(augment: ColorAugment, overrides: dict[str, float]) -> ColorAugment:
    """``augment`` with some fields replaced; unknown field names raise ValueError listing the known ones.

    Why: in person crops identity is largely clothing colour, so hue jitter and grayscale teach an
    invariance a colour-driven downstream task must unlearn; methods expose this switch for ablations.
    """
    known = sorted(ColorAugment.__dataclass_fields__)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown colour field(s) {unknown}; known: {known}")
    return dataclasses.replace(augment, **overrides)


def colour_augments(
    overrides: dict[str, float], pipelines: dict[str, ColorAugment] | None = None
) -> dict[str, ColorAugment]:
    """``pipelines`` (default: SAIPViewConfig's three) with the same ``overrides`` applied to each (each
    keeps its own blur / solarisation unless overridden)."""
    if pipelines is None:
        pipelines = {"global1_aug": GLOBAL1_AUG, "global2_aug": GLOBAL2_AUG, "local_aug": LOCAL_AUG}
    return {name: override_colour(augment, overrides) for name, augment in pipelines.items()}


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = constant(IMAGENET_MEAN, images.device, images.dtype).view(1, 3, 1, 1)
    std = constant(IMAGENET_STD, images.device, images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


# ------------------------------------------------------------------------------------------------- masks
def anchor_grid_mask(
    rngs: Sequence[np.random.Generator], grid: tuple[int, int], keep_ratio: float, device: torch.device | str
) -> torch.Tensor:
    """(B, gh, gw) keep-mask (1 = visible) with exactly ``int(gh*gw*keep_ratio)`` visible cells each."""
    cells = grid[0] * grid[1]
    keep = int(cells * keep_ratio)
    rows = []
    for rng in rngs:
        row = np.zeros(cells, dtype=np.float32)
        row[rng.permutation(cells)[:keep]] = 1.0
        rows.append(row)
    return host_to_device(torch.from_numpy(np.stack(rows)).view(-1, *grid), device)


def upsampled_mask_noise(
    keep_mask: torch.Tensor, new_grid: tuple[int, int], rngs: Sequence[np.random.Generator]
) -> torch.Tensor:
    """Nearest-upsample an anchor-grid keep-mask to ``new_grid`` and turn it into masking noise.

    Visible cells get noise in [0, 0.5), removed cells in [1, 1.5): keeping the ``k`` lowest keeps the
    visible cells first, breaking ties randomly, as the release's argsort over the upsampled mask does
    (the keep count need not equal the number of visible cells: docs/method.md#masked-token-keep-count).
    """
    up = F.interpolate(keep_mask.unsqueeze(1).float(), size=new_grid, mode="nearest").flatten(1)
    ties = host_to_device(
        torch.from_numpy(np.stack([rng.random(up.shape[1]).astype(np.float32) for rng in rngs])), up.device
    )
    return (1.0 - up) + 0.5 * ties


# ------------------------------------------------------------------------------------------------ canvas
def paste_positions(
    rng: np.random.Generator, canvas: tuple[int, int], paste: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Top-left corners of the ROI paste and the instance paste; the second starts right of the first."""
    canvas_h, canvas_w = canvas
    paste_h, paste_w = paste
    if canvas_w < 2 * paste_w or canvas_h < paste_h:
        raise ValueError(f"canvas {canvas} cannot hold two {paste} pastes side by side")
    roi_top = int(rng.integers(0, canvas_h - paste_h + 1))
    roi_left = int(rng.integers(0, canvas_w - 2 * paste_w + 1))
    inst_top = int(rng.integers(0, canvas_h - paste_h + 1))
    inst_left = int(rng.integers(roi_left + paste_w, canvas_w - paste_w + 1))
    return (roi_top, roi_left), (inst_top, inst_left)


def paste_two(
    canvas: torch.Tensor,
    roi: torch.Tensor,
    instance: torch.Tensor,
    rngs: Sequence[np.random.Generator],
    alpha: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-blend (``alpha`` person + ``1-alpha`` background) the ROI crop and the small anchor.

    Returns the canvas and the binary masks ``roi_mask``, ``inst_mask`` (B, 1, H, W). Batched: each
    canvas pixel gathers the pixel of the paste that covers it. Why: a Python loop over samples launched
    about 650 small kernels per SAIP micro-step on a GPU; the arithmetic per pixel is the same.
    """
    batch, channels, height, width = canvas.shape
    ph, pw = roi.shape[-2:]
    if (ph, pw) != tuple(instance.shape[-2:]):
        raise ValueError("ROI and instance pastes must have the same size")
    corners = torch.tensor([[*roi_at, *inst_at] for roi_at, inst_at in
                            (paste_positions(rng, (height, width), (ph, pw)) for rng in rngs)])
    corners = host_to_device(corners, canvas.device)
    ys = torch.arange(height, device=canvas.device).view(1, height, 1)
    xs = torch.arange(width, device=canvas.device).view(1, 1, width)

    def place(image: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows = ys - top.view(-1, 1, 1)
        cols = xs - left.view(-1, 1, 1)
        inside = (rows >= 0) & (rows < ph) & (cols >= 0) & (cols < pw)  # (B, H, W)
        index = (rows.clamp(0, ph - 1) * pw + cols.clamp(0, pw - 1)).view(batch, 1, -1)
        placed = image.flatten(2).gather(2, index.expand(-1, channels, -1))
        placed = placed.view(batch, channels, height, width)
        return placed, inside.unsqueeze(1)

    out = canvas
    masks = []
    for image, top, left in ((roi, corners[:, 0], corners[:, 1]), (instance, corners[:, 2], corners[:, 3])):
        placed, inside = place(image, top, left)
        out = torch.where(inside, alpha * placed + (1 - alpha) * out, out)
        masks.append(inside.to(canvas.dtype))
    return out, masks[0], masks[1]


# ----------------------------------------------------------------------------------------------- SAIP
@dataclass(frozen=True)
class SAIPViewConfig:
    """View geometry of SAIP (docs/method.md#views); the defaults are the paper's."""

    global_size: tuple[int, int] = (256, 128)
    global_scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.4, 0.6)
    local_size: tuple[int, int] = (128, 64)
    local_scale: tuple[float, float] = (0.05, 0.8)
    n_local: int = 6  # plain local crops l_1..l_6 (l_7, the ROI crop, is extra)
    scales: tuple[float, ...] = (0.75, 0.875, 1.125, 1.25)
    rescale_rounding: str = "pad"
    masked_scale: float = 1.25
    mask_keep: float = 0.25
    canvas_size: tuple[int, int] = (224, 224)
    canvas_scale: tuple[float, float] = (0.2, 1.0)
    canvas_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    paste_alpha: float = 0.7
    patch: int = 16
    with_masked: bool = True
    with_canvas: bool = True
    global1_aug: ColorAugment = GLOBAL1_AUG
    global2_aug: ColorAugment = GLOBAL2_AUG
    local_aug: ColorAugment = LOCAL_AUG
    extra: dict = field(default_factory=dict)

    @property
    def anchor_grid(self) -> tuple[int, int]:
        return self.global_size[0] // self.patch, self.global_size[1] // self.patch

    @property
    def masked_size(self) -> tuple[int, int]:
        return tuple(round(s * self.masked_scale) for s in self.global_size)  # type: ignore[return-value]

    @property
    def masked_grid(self) -> tuple[int, int]:
        return tuple(-(-s // self.patch) for s in self.masked_size)  # type: ignore[return-value]


def make_saip_views(
    images: torch.Tensor,
    sample_seeds: torch.Tensor,
    step_seed: torch.Tensor | int,
    cfg: SAIPViewConfig,
    backgrounds: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All SAIP views of a batch (normalised with ImageNet statistics unless noted).

    Keys: ``global`` (2B: x_a then x_g), ``local`` (n_local*B, view-major), ``roi_scaled`` (l_7 rescaled),
    ``anchor_scaled`` (r rescaled), ``masked`` (x_g x1.25) + ``mask_noise`` (B, L) + ``mask_keep`` (int),
    ``canvas`` (B, 3, 224, 224) + ``roi_mask``/``inst_mask`` (B, 1, 224, 224, float 0/1), and the
    scale factors ``roi_scale``/``anchor_scale`` (python floats, one per batch).
    """
    batch = images.shape[0]
    rngs = sample_rngs(sample_seeds)
    srng = step_rng(step_seed)
    views: dict[str, torch.Tensor] = {}
    x_a, x_g = augmented_crops(images, rngs, (cfg.global1_aug, cfg.global2_aug), cfg.global_size,
                               cfg.global_scale, cfg.ratio)
    locals_ = augmented_crops(images, rngs, (cfg.local_aug,) * (cfg.n_local + 1), cfg.local_size,
                              cfg.local_scale, cfg.ratio)
    roi = locals_.pop()  # l_7: pasted into the canvas and rescaled as a query
    anchor_small = resize_nearest(x_a, cfg.local_size)  # r
    roi_scale = float(srng.choice(cfg.scales))
    anchor_scale = float(srng.choice(cfg.scales))
    views["global"] = normalize(torch.cat([x_a, x_g]))
    if locals_:
        views["local"] = normalize(torch.cat(locals_))
    views["roi_scaled"] = normalize(
        resize_nearest(roi, scaled_size(cfg.local_size, roi_scale, cfg.rescale_rounding, cfg.patch))
    )
    views["anchor_scaled"] = normalize(
        resize_nearest(
            anchor_small, scaled_size(cfg.local_size, anchor_scale, cfg.rescale_rounding, cfg.patch)
        )
    )
    views["roi_scale"] = roi_scale  # type: ignore[assignment]
    views["anchor_scale"] = anchor_scale  # type: ignore[assignment]
    if cfg.with_masked:
        views["masked"] = normalize(resize_nearest(x_g, cfg.masked_size))
        keep_mask = anchor_grid_mask(rngs, cfg.anchor_grid, cfg.mask_keep, images.device)
        views["mask_noise"] = upsampled_mask_noise(keep_mask, cfg.masked_grid, rngs)
        views["mask_keep"] = int(cfg.masked_grid[0] * cfg.masked_grid[1] * cfg.mask_keep)  # type: ignore[assignment]
    if cfg.with_canvas:
        if backgrounds is None:
            raise ValueError("the multi-person canvas needs background images")
        canvas, _ = random_resized_crop(
            backgrounds, rngs, cfg.canvas_size, cfg.canvas_scale, cfg.canvas_ratio
        )
        canvas = cfg.global2_aug.apply(canvas, rngs)
        canvas, roi_mask, inst_mask = paste_two(canvas, roi, anchor_small, rngs, cfg.paste_alpha)
        views["canvas"] = normalize(canvas)
        views["roi_mask"] = roi_mask
        views["inst_mask"] = inst_mask
    views["batch_size"] = batch  # type: ignore[assignment]
    return views
