"""A tiny pretraining folder of stick-figure "people" with COCO-17 keypoints (pretrain layout).

Why not random noise: the MIM losses need learnable structure and HAP needs keypoints that spread over
body parts; each identity has its own clothing colours so the supervised labels are learnable too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

# COCO-17 joints of a standing figure, as fractions of (width, height).
FIGURE = [
    (0.50, 0.08), (0.46, 0.06), (0.54, 0.06), (0.42, 0.08), (0.58, 0.08),  # nose, eyes, ears
    (0.35, 0.22), (0.65, 0.22), (0.28, 0.38), (0.72, 0.38), (0.25, 0.52), (0.75, 0.52),  # arms
    (0.40, 0.52), (0.60, 0.52), (0.38, 0.72), (0.62, 0.72), (0.37, 0.92), (0.63, 0.92),  # legs
]
LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16)]


def draw_person(
    rng: np.random.Generator, colours: np.ndarray, size: tuple[int, int]
) -> tuple[Image.Image, list]:
    height, width = size
    background = rng.integers(0, 255, size=3)
    array = np.clip(background + rng.integers(-25, 25, size=(height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    draw = ImageDraw.Draw(image)
    jitter = rng.normal(0, 0.015, size=(17, 2))
    points = [((x + dx) * width, (y + dy) * height) for (x, y), (dx, dy) in zip(FIGURE, jitter, strict=True)]
    top, shirt, legs = (tuple(int(c) for c in colour) for colour in colours)
    draw.polygon([points[5], points[6], points[12], points[11]], fill=shirt)
    for i, j in LIMBS:
        draw.line([points[i], points[j]], fill=shirt if i < 11 else legs, width=max(2, width // 10))
    radius = width * 0.1
    draw.ellipse([points[0][0] - radius, points[0][1] - radius, points[0][0] + radius, points[0][1] + radius],
                 fill=top)
    return image, [[float(x), float(y), 2.0] for x, y in points]


def write_people_folder(root: Path, identities: int = 4, per_identity: int = 6, size=(128, 64)) -> Path:
    rng = np.random.default_rng(0)
    keypoints: dict[str, Any] = {}
    for ident in range(identities):
        colours = rng.integers(0, 255, size=(3, 3))
        folder = root / "images" / f"{ident:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            image, points = draw_person(rng, colours, size)
            name = f"{ident:04d}_{j:02d}.jpg"
            image.save(folder / name, quality=92)
            keypoints[f"{ident:04d}/{name}"] = points
    (root / "keypoints.json").write_text(json.dumps(keypoints))
    return root


@pytest.fixture(scope="session")
def people_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_people_folder(tmp_path_factory.mktemp("people"))


@pytest.fixture(autouse=True)
def _single_thread() -> Any:
    """Tests share 2 cores with everyone: one intra-op thread keeps timings stable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build_method(name: str, backbone_name: str = "vit_tiny", img_size=(128, 64), **config: Any):
    """A method on a fresh seeded backbone with its ``quick`` preset patched by ``config``."""
    from saip_bench.backbones import create_backbone
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS
    from saip_bench.pretrain.trainer import load_preset
    from saip_bench.utils import seed_everything

    import_submodules("saip_bench.pretrain.methods")
    _, method_config = load_preset(name, "quick")
    seed_everything(0)
    backbone = create_backbone(backbone_name, img_size=tuple(img_size))
    return METHODS.get(name)(backbone, {**method_config, **config})


def train_losses(
    name: str, data_root: Path, out_dir: Path, steps: int = 8, batch_size: int = 8,
    img_size=(128, 64), lr: float = 5e-4, backbone: str = "vit_tiny", **config: Any,
) -> tuple[list[float], Any]:
    """A few steps through the CLI's code path (``api.pretrain``: support check, trainer, export).

    Returns the per-step losses and the trained method.
    """
    from saip_bench.pretrain import api

    if name == "supervised_ids":
        from saip_bench.pretrain.methods.supervised import Supervised

        config = Supervised.prepare_config(config, data_root)
    overrides = {"steps": steps, "epochs": None, "batch_size": batch_size, "warmup_steps": 1, "lr": lr,
                 "checkpoint_every": 10_000, "img_size": list(img_size), "source_size": list(img_size)}
    captured: dict[str, Any] = {}
    original = api.Trainer.fit

    def fit_and_keep(trainer: Any) -> Any:  # keep the trainer to read its history
        captured["trainer"] = trainer
        return original(trainer)

    api.Trainer.fit = fit_and_keep
    try:
        path = api.pretrain(name, backbone, "quick", data_root, out_dir, seed=0, progress=False,
                            overrides=overrides, method_overrides=config)
    finally:
        api.Trainer.fit = original
    trainer = captured["trainer"]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["method"] == name and sidecar["hyperparameters"] == json.loads(
        json.dumps(trainer.method.hyperparameters())
    )
    return [entry["loss"] for entry in trainer.history], trainer.method


def decreased(losses: list[float], window: int = 3) -> bool:
    """Mean of the last ``window`` losses below the mean of the first ``window``."""
    return float(np.mean(losses[-window:])) < float(np.mean(losses[:window]))


def fake_batch(size: int = 4, img_size=(128, 64), seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    keypoints = torch.tensor(FIGURE).view(1, 17, 2) * torch.tensor([img_size[1], img_size[0]])
    keypoints = torch.cat([keypoints.expand(size, -1, -1), torch.full((size, 17, 1), 2.0)], dim=-1)
    return {
        "image": torch.rand(size, 3, *img_size, generator=generator),
        "sample_seed": torch.arange(size) + 1000 * seed,
        "label": torch.arange(size) % 2,
        "keypoints": keypoints,
    }
