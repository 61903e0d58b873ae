"""Visual checks: predicted part maps and skeletons drawn over the input image (PNG files).

Why: a score alone hides systematic errors (left/right swaps, shifted heatmaps); one look at a few
images shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def palette(num_classes: int) -> np.ndarray:
    """The PASCAL-style bit-interleaved colour map (class 0 black), (num_classes, 3) uint8."""
    colours = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for shift in range(8):
            r |= ((value >> 0) & 1) << (7 - shift)
            g |= ((value >> 1) & 1) << (7 - shift)
            b |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def colorize(labels: np.ndarray, num_classes: int, ignore_index: int = 255) -> Image.Image:
    colours = palette(num_classes)
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = (labels < num_classes) & (labels != ignore_index)
    rgb[valid] = colours[labels[valid]]
    rgb[labels == ignore_index] = 255
    return Image.fromarray(rgb)


def save_part_map(
    image: Image.Image, prediction: np.ndarray, gt: np.ndarray | None, num_classes: int, path: Path
) -> Path:
    """[image | prediction over image | GT over image] side by side."""
    panels = [image, Image.blend(image, colorize(prediction, num_classes), 0.6)]
    if gt is not None:
        panels.append(Image.blend(image, colorize(gt, num_classes), 0.6))
    canvas = Image.new("RGB", (sum(p.width for p in panels), image.height))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def save_skeletons(
    image: Image.Image,
    people: Sequence[np.ndarray],
    skeleton: Sequence[Sequence[int]],
    path: Path,
    score_threshold: float = 0.3,
    boxes: Sequence[Sequence[float]] = (),
) -> Path:
    """Draw (K, 3) [x, y, score] keypoint arrays with 0-based ``skeleton`` limbs over the image."""
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    radius = max(1, round(min(image.size) / 150))
    for box in boxes:
        x, y, w, h = box
        draw.rectangle([x, y, x + w, y + h], outline=(255, 255, 0))
    for person_index, keypoints in enumerate(people):
        colour = tuple(int(c) for c in palette(person_index + 2)[person_index + 1])
        colour = colour if sum(colour) > 0 else (0, 255, 0)
        # an untrained head is rarely confident: draw its most confident half instead of nothing
        threshold = min(score_threshold, 0.5 * float(keypoints[:, 2].max(initial=0.0)))
        visible = keypoints[:, 2] > threshold
        for a, b in skeleton:
            if a < len(keypoints) and b < len(keypoints) and visible[a] and visible[b]:
                draw.line([tuple(keypoints[a, :2]), tuple(keypoints[b, :2])], fill=colour, width=radius)
        for x, y, _ in keypoints[visible]:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
