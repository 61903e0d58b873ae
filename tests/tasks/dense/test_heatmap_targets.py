"""The batched heatmap renderer against mmpose's own encoders (UDPHeatmap, MSRAHeatmap), sample by sample:
random keypoints and the edge cases of their rules (truncated centres, windows touching or missing the
heatmap, unlabelled points), for the COCO (17) and whole-body (133) layouts; and the compact pipeline
sample against the sample that ran mmpose's GenerateTarget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from saip_bench.devices import unit_float
from saip_bench.tasks.dense.heatmap_targets import (
    heatmap_scale,
    render_heatmaps,
    to_heatmap_coordinates,
)
from saip_bench.tasks.dense.topdown import build_codec, codec_config


def mmpose_targets(codec: dict, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, K, H, W) heatmaps and (B, K) weights from the codec's ``encode``, one sample at a time."""
    encoder = build_codec(codec)
    encoded = [encoder.encode(keypoints[i:i + 1], visible[i:i + 1]) for i in range(len(keypoints))]
    return (np.stack([e["heatmaps"] for e in encoded]),
            np.stack([e["keypoint_weights"][0] for e in encoded]))


def assert_matches_mmpose(codec: dict, keypoints: np.ndarray, visible: np.ndarray) -> None:
    """``keypoints`` in crop pixels (B, K, 2), as mmpose's encoders take them."""
    heatmaps, weights = mmpose_targets(codec, keypoints, visible)
    points = torch.from_numpy(to_heatmap_coordinates(keypoints, codec))
    ours, our_weights = render_heatmaps(points, torch.from_numpy(visible), codec)
    assert ours.dtype == torch.float32 and ours.shape == heatmaps.shape
    np.testing.assert_array_equal(our_weights.numpy(), weights)
    np.testing.assert_allclose(ours.numpy(), heatmaps, rtol=0, atol=1e-6)
    # the same pixels are drawn (a window one pixel off would still be within a loose tolerance nowhere)
    np.testing.assert_array_equal(ours.numpy() > 0, heatmaps > 0)


CODECS = [("udp", (256, 192), 2.0), ("msra", (256, 192), 2.0),
          ("udp", (64, 48), 1.0), ("msra", (64, 48), 1.0),
          ("udp", (256, 192), 1.5), ("msra", (256, 192), 1.5)]  # a radius of 4.5: its edges truncated


@pytest.mark.parametrize("num_keypoints", [17, 133])
@pytest.mark.parametrize(("kind", "size", "sigma"), CODECS)
def test_random_keypoints_match_the_encoder(kind, size, sigma, num_keypoints):
    codec = codec_config(kind, size, sigma)
    rng = np.random.default_rng(num_keypoints)
    height, width = size
    # a margin past every side: windows partly and wholly off the crop
    shape = (6, num_keypoints)
    keypoints = np.stack([rng.uniform(-0.2 * width, 1.2 * width, shape),
                          rng.uniform(-0.2 * height, 1.2 * height, shape)], -1).astype(np.float32)
    visible = (rng.uniform(size=(6, num_keypoints)) > 0.2).astype(np.float32)
    assert_matches_mmpose(codec, keypoints, visible)


def edge_coordinates(length: int, radius: float) -> list[float]:
    """Heatmap coordinates at the rules' edges along an axis of ``length`` pixels: centres rounded by
    truncation below zero (-0.6 -> 0, floor would give -1), the window's far edge exactly at pixel 0
    (centre -radius-1: nothing drawn, weight kept) or one past it (weight 0), the last pixel, and a
    window starting on the last pixel (centre length-1+radius) or one past it; then quarter-pixel sweeps
    over both ends, which cross every such edge for any radius."""
    last = length - 1
    named = [-radius - 2.5, -radius - 2.0, -radius - 1.5, -radius - 1.0, -radius - 0.5, -1.5, -0.6, -0.5,
             -0.49, 0.0, 0.5, last - 0.5, float(last), last + 0.49, last + 0.5, last + radius - 0.5,
             last + radius + 0.49, last + radius + 0.5, last + radius + 2.0]
    sweeps = np.concatenate([np.arange(-radius - 3, 1.5, 0.25),
                             np.arange(last - 1, last + radius + 2.5, 0.25)])
    return named + sweeps.tolist()


# UDP with (input - 1) = 4 (heatmap - 1) and MSRA with input = 4 heatmap: heatmap coordinates x 4 are
# exact crop coordinates, so the encoders see exactly the edge coordinates
EXACT = [{"type": "UDPHeatmap", "input_size": (189, 253), "heatmap_size": (48, 64), "sigma": 2.0},
         {"type": "MSRAHeatmap", "input_size": (192, 256), "heatmap_size": (48, 64), "sigma": 2.0},
         {"type": "UDPHeatmap", "input_size": (45, 61), "heatmap_size": (12, 16), "sigma": 1.0},
         {"type": "MSRAHeatmap", "input_size": (48, 64), "heatmap_size": (12, 16), "sigma": 1.0},
         {"type": "UDPHeatmap", "input_size": (189, 253), "heatmap_size": (48, 64), "sigma": 1.5},
         {"type": "MSRAHeatmap", "input_size": (192, 256), "heatmap_size": (48, 64), "sigma": 1.5}]


@pytest.mark.parametrize("num_keypoints", [17, 133])
@pytest.mark.parametrize("codec", EXACT, ids=lambda c: f"{c['type']}-{c['heatmap_size'][0]}-{c['sigma']}")
def test_edge_cases_match_the_encoder(codec, num_keypoints):
    assert np.all(heatmap_scale(codec) == 4.0)
    width, height = codec["heatmap_size"]
    radius = 3 * codec["sigma"]
    xs, ys = edge_coordinates(width, radius), edge_coordinates(height, radius)
    # each axis's edges with the other axis inside, and corners (both axes at an edge)
    pairs = np.array([(x, height / 3 + 0.3) for x in xs] + [(width / 3 + 0.3, y) for y in ys]
                     + list(itertools.product(xs[::3], ys[::3])))
    count = -(-len(pairs) // num_keypoints) * num_keypoints
    rng = np.random.default_rng(0)
    filler = rng.uniform(0, [width, height], (count - len(pairs), 2))
    points = np.concatenate([pairs, filler]).reshape(-1, num_keypoints, 2).astype(np.float32)
    # labelled, unlabelled and the encoders' in-between visibilities (a weight < 0.5 is kept, undrawn)
    visible = rng.choice(np.array([1.0, 1.0, 1.0, 0.0, 0.3, 0.5, 0.7], np.float32), points.shape[:2])
    visible[0] = 0.0  # a person with no labelled keypoint
    visible[1] = 1.0
    assert_matches_mmpose(codec, points * 4.0, visible)


def test_edge_cases_are_the_cases():
    """The rules the edge coordinates stand for, written out (one UDP axis, 48 pixels, radius 6)."""
    codec = EXACT[0]
    points = torch.tensor([[[-0.6, 10.0], [-7.5, 10.0], [-8.5, 10.0], [53.49, 10.0], [53.5, 10.0]]])
    heatmaps, weights = render_heatmaps(points, torch.ones(1, 5), codec)
    drawn = heatmaps[0, :, 10].gt(0)  # the row through the centres
    assert drawn[0].nonzero().flatten().tolist() == list(range(0, 7))  # centre 0 (truncation), not -1
    assert not drawn[1].any() and weights[0, 1] == 1  # far edge exactly at pixel 0: kept, not drawn
    assert not drawn[2].any() and weights[0, 2] == 0  # one pixel further: missed
    assert drawn[3].nonzero().flatten().tolist() == [47] and weights[0, 3] == 1
    assert not drawn[4].any() and weights[0, 4] == 0
    # UDP puts the peak on the point itself, MSRA on the centre pixel
    x = float(np.float32(53.49))
    assert heatmaps[0, 3, 10, 47] == pytest.approx(np.exp(-(47 - x) ** 2 / 8), rel=1e-6)
    msra, _ = render_heatmaps(points, torch.ones(1, 5), EXACT[1])
    assert msra[0, 3, 10, 47] == pytest.approx(np.exp(-36 / 8), rel=1e-6)


def test_unknown_codecs_are_refused():
    with pytest.raises(ValueError, match="no batched renderer"):
        render_heatmaps(torch.zeros(1, 1, 2), torch.ones(1, 1), {"type": "RegressionLabel"})
    with pytest.raises(ValueError, match="unbiased"):
        heatmap_scale({**EXACT[1], "unbiased": True})


def test_unit_float_is_the_cpu_division():
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    expected = values.float() / 255.0
    assert torch.equal(unit_float(values), expected)
    if torch.cuda.is_available():  # the reason for the tensor divisor: CUDA's CPU-scalar path is 1 ulp off
        assert torch.equal(unit_float(values.cuda()).cpu(), expected)
