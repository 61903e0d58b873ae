"""Gaussian heatmap targets for a whole batch on any device, equal to mmpose's ``UDPHeatmap`` and
``MSRAHeatmap`` (not unbiased) encoders.

Why: mmpose's ``GenerateTarget`` loops over keypoints in Python in every DataLoader worker (~3 ms a
133-point whole-body sample) and its float32 heatmaps (K x 64 x 48: 1.6 MB a whole-body sample) then
cross worker shared memory, collate, pinning and the host-to-device copy, for a GPU that waited for data
over 95 % of each fine-tune step. Here the loader carries only the keypoints in heatmap coordinates and
their visibility, and the device renders the targets of the batch at once.

The rules reproduced (mmpose 1.x ``codecs/utils/gaussian_heatmap.py``), per labelled keypoint (visibility
>= 0.5) at heatmap coordinates ``p``:

* the window's centre pixel is ``trunc(p + 0.5)`` (truncation toward zero, not floor, below zero);
* the window spans ``[trunc(c - 3 sigma), trunc(c + 3 sigma + 1))`` in x and y; a window wholly off the
  heatmap (left >= W, top >= H, right < 0 or bottom < 0) draws nothing and sets the weight to 0; a window
  whose right/bottom edge is exactly 0 draws nothing but keeps its weight (mmpose does the same);
* UDP centres the Gaussian on ``p`` itself (sub-pixel), MSRA on the integer centre pixel;
* the Gaussian is not normalised (peak 1); one instance per sample, so each channel holds one Gaussian
  (the encoders' max-combination never meets a second one);
* an unlabelled keypoint draws nothing and keeps its visibility as its weight.

Values agree with the codecs to ~1e-7 (the Gaussian is evaluated as a product of its two 1-D factors in
float32; mmpose evaluates the 2-D form in float64 for UDP), the weights exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

CODECS = ("UDPHeatmap", "MSRAHeatmap")


def _check(codec: dict[str, Any]) -> None:
    kind = codec.get("type")
    if kind not in CODECS:
        raise ValueError(f"no batched renderer for codec {kind!r}; known: {', '.join(CODECS)}")
    if kind == "UDPHeatmap" and codec.get("heatmap_type", "gaussian") != "gaussian":
        raise ValueError("the batched UDP renderer draws Gaussian heatmaps only (heatmap_type='gaussian')")
    if kind == "MSRAHeatmap" and codec.get("unbiased", False):
        raise ValueError("the batched MSRA renderer follows the biased encoder only (unbiased=False)")


def heatmap_scale(codec: dict[str, Any]) -> np.ndarray:
    """(2,) float32 input-pixels per heatmap-pixel in (x, y), as the codec computes it: UDP maps the
    corner pixels onto each other, (input - 1) / (heatmap - 1); MSRA divides the sizes."""
    _check(codec)
    input_wh = np.asarray(codec["input_size"], dtype=np.float64)
    heatmap_wh = np.asarray(codec["heatmap_size"], dtype=np.float64)
    if codec["type"] == "UDPHeatmap":
        return ((input_wh - 1) / (heatmap_wh - 1)).astype(np.float32)
    return (input_wh / heatmap_wh).astype(np.float32)


def to_heatmap_coordinates(keypoints: np.ndarray, codec: dict[str, Any]) -> np.ndarray:
    """Crop-pixel keypoints (..., 2) -> the codec's heatmap coordinates, float32 as its ``encode`` divides."""
    return np.asarray(keypoints, dtype=np.float32)[..., :2] / heatmap_scale(codec)


def _axis(centre: torch.Tensor, point: torch.Tensor, length: int, sigma: float, udp: bool
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of every window: the 1-D Gaussian factor over ``length`` pixels (zero outside the window)
    and whether the window lies wholly before the heatmap's start or past its end.

    ``centre`` is the integer window centre (float64), ``point`` the keypoint coordinate (float32)."""
    radius = sigma * 3
    size = 2 * radius + 1
    half = size // 2
    start = torch.trunc(centre - radius)  # first window pixel (heatmap coordinates)
    stop = torch.trunc(centre + radius + 1)  # one past the last
    off = (start >= length) | (stop < 0)
    # pixel q of the heatmap is entry g = q - start of the local Gaussian, whose mean sits at entry
    # half (+ the sub-pixel offset for UDP): the distance to the mean is q - origin
    origin = start + half
    if udp:
        origin = origin - centre + point.double()
    pixels = torch.arange(length, device=point.device, dtype=torch.float32)
    distance = pixels - origin.float().unsqueeze(-1)
    # (stop - start never exceeds the local Gaussian's ceil(2 radius + 1) entries: no third bound)
    inside = (pixels >= start.float().unsqueeze(-1)) & (pixels < stop.float().unsqueeze(-1))
    factor = torch.exp(distance.square() / (-2 * sigma**2))
    return torch.where(inside, factor, torch.zeros((), device=point.device)), off


def render_heatmaps(
    points: torch.Tensor, visible: torch.Tensor, codec: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, 2) keypoints in heatmap coordinates (``to_heatmap_coordinates``) and (B, K) visibilities ->
    (B, K, H, W) float32 heatmaps and (B, K) float32 keypoint weights, on the keypoints' device.

    Runs outside autocast: the targets are float32 whatever precision the forward pass uses."""
    _check(codec)
    width, height = (int(v) for v in codec["heatmap_size"])
    sigma = float(codec["sigma"])
    udp = codec["type"] == "UDPHeatmap"
    with torch.autocast(points.device.type, enabled=False):
        points = points.float()
        visible = visible.float()
        centre = torch.trunc(points + 0.5).double()  # float32 add, then truncation, as mmpose
        gx, off_x = _axis(centre[..., 0], points[..., 0], width, sigma, udp)
        gy, off_y = _axis(centre[..., 1], points[..., 1], height, sigma, udp)
        labelled = visible >= 0.5
        # a window off the heatmap has no pixel inside it on that axis: it draws nothing by itself
        heatmaps = (gy * labelled.unsqueeze(-1)).unsqueeze(-1) * gx.unsqueeze(-2)
        weights = torch.where(labelled & (off_x | off_y), torch.zeros((), device=visible.device), visible)
    return heatmaps, weights
