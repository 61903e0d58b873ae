"""Shared pieces of the exporters: seeded streams, identity pools, person crops, multi-person scenes."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saip_bench.data.synth.appearance import Appearance, sample_appearance
from saip_bench.data.synth.presets import Preset
from saip_bench.data.synth.render import sample_pose
from saip_bench.data.synth.scene import (
    Camera,
    PersonSpec,
    SceneRender,
    apply_camera,
    background_crop,
    make_background,
    make_camera,
    render_scene,
)


def stream(seed: int, *names: str | int) -> np.random.Generator:
    """An independent generator per (seed, dataset, purpose): datasets do not depend on each other."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(n).encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence(words))


@dataclass
class ExportContext:
    root: Path  # the dataset root being written
    preset: Preset
    seed: int
    name: str
    tick: Callable[[int], None] = lambda n: None
    tiles: list[tuple[np.ndarray, str]] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)  # sidecar facts for tests (identity of each image, ...)
    counts: dict = field(default_factory=dict)  # split -> {unit: n} as a reader must find them (verify)
    _pool: list[np.ndarray] | None = None

    def rng(self, *names: str | int) -> np.random.Generator:
        return stream(self.seed, self.name, *names)

    def backgrounds(self) -> list[np.ndarray]:
        if self._pool is None:
            rng = self.rng("backgrounds")
            h = max(192, self.preset.scene_hw[0], self.preset.fashion_hw[0])
            w = max(256, self.preset.scene_hw[1], self.preset.fashion_hw[1])
            self._pool = [make_background(rng, h, w) for _ in range(12)]
        return self._pool

    def add_tile(self, image: np.ndarray, text: str, limit: int = 12) -> None:
        if len(self.tiles) < limit:
            self.tiles.append((image, text))


def identities(rng: np.random.Generator, n: int) -> list[Appearance]:
    return [sample_appearance(rng) for _ in range(n)]


def cameras(rng: np.random.Generator, n: int) -> list[Camera]:
    return [make_camera(rng) for _ in range(n)]


def person_crop(
    a: Appearance,
    rng: np.random.Generator,
    hw: tuple[int, int],
    pool: list[np.ndarray],
    camera: Camera | None,
    view: str | None = None,
    occluder_prob: float = 0.15,
    partial: str | None = None,
    scale: tuple[float, float] = (0.86, 1.0),
) -> tuple[np.ndarray, SceneRender]:
    """A detector-style crop of one person: misalignment, scale, sometimes a second person in it.

    ``partial`` = "top" / "bottom" renders a badly placed box (Market junk-like); "upper" a half body.
    """
    h, w = hw
    bg = background_crop(pool, rng, h, w)
    body_h = h * rng.uniform(*scale)
    foot_y = h * rng.uniform(0.95, 1.01)
    if partial == "top":
        foot_y = h * rng.uniform(1.5, 1.8)
    elif partial == "upper":  # a half-body photo: head to hips or knees
        foot_y = h * rng.uniform(1.15, 1.4)
    elif partial == "bottom":
        foot_y = h * rng.uniform(0.5, 0.65)
    people = []
    if rng.random() < occluder_prob:
        side = 1 if rng.random() < 0.5 else -1
        other = sample_appearance(rng)
        behind = rng.random() < 0.6
        people.append(
            PersonSpec(
                other,
                sample_pose(rng),
                w / 2 + side * w * rng.uniform(0.45, 0.7),
                foot_y + (-0.03 if behind else 0.04) * h,
                body_h * rng.uniform(0.9, 1.05),
            )
        )
    people.append(
        PersonSpec(a, sample_pose(rng, view=view), w / 2 + w * rng.uniform(-0.07, 0.07), foot_y, body_h)
    )
    scene = render_scene(bg, people, rng)
    image = apply_camera(scene.image, camera, rng) if camera is not None else scene.image
    scene.image = image
    return image, scene


def main_person(scene: SceneRender) -> int:
    """Index of the crop's own person (the last added)."""
    return len(scene.people) - 1


def crowd_scene(
    rng: np.random.Generator,
    hw: tuple[int, int],
    pool: list[np.ndarray],
    n_people: int,
    min_h: float = 0.18,
    max_h: float = 0.85,
    allow_cut: bool = True,
) -> tuple[SceneRender, list[PersonSpec]]:
    """People on a ground plane: farther (higher foot) = smaller, overlapping, some cut by the border."""
    h, w = hw
    bg = background_crop(pool, rng, h, w)
    people = []
    for _ in range(n_people):
        depth = rng.uniform(0, 1)  # 0 = far, 1 = near
        body_h = h * (min_h + (max_h - min_h) * depth**1.5)
        foot_y = h * (0.45 + 0.6 * depth) + rng.uniform(-0.03, 0.03) * h
        if not allow_cut:
            foot_y = min(foot_y, h * 0.99)
            body_h = min(body_h, foot_y * 0.95)
        lo, hi = (-0.05, 1.05) if allow_cut else (0.1, 0.9)
        foot_x = w * rng.uniform(lo, hi)
        people.append(
            PersonSpec(sample_appearance(rng), sample_pose(rng, lively=0.35), foot_x, foot_y, body_h)
        )
    scene = render_scene(bg, people, rng)
    return scene, people
