"""Pretraining's ``jpeg_draft`` switch: off decodes exactly as before, on drafts only large JPEGs, and it is
part of the config hash (``paper`` preset on, CPU ``quick`` off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saip_bench.pretrain.data import _load_rgb
from saip_bench.pretrain.trainer import Trainer, load_preset

from ._micro import micro_saip, micro_train_config


def _before_the_switch(path: Path, size: tuple[int, int], square_window: float | None = None) -> torch.Tensor:
    """The loader as it was before drafts existed (full decode, crop, bilinear resize), written out."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if square_window is not None:
            width, height = image.size
            side = min(width, height)
            top, left = round((height - side) * square_window), round((width - side) * square_window)
            image = image.crop((left, top, left + side, top + side))
        image = image.resize((size[1], size[0]), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A large person crop (JPEG), a full frame (JPEG) and the crop as PNG: smooth content plus edges."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    out = {}
    for name, (height, width) in {"crop": (1024, 512), "frame": (1080, 1920)}.items():
        ys, xs = np.mgrid[:height, :width]
        pixels = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256], -1).astype(np.uint8)
        pixels[height // 3 : height // 2, width // 4 : width // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
        out[name] = folder / f"{name}.jpg"
        Image.fromarray(pixels).save(out[name], quality=90)
        if name == "crop":
            out["png"] = folder / "crop.png"
            Image.fromarray(pixels).save(out["png"])
    return out


def test_off_decodes_exactly_as_before(photos) -> None:
    for path in photos.values():
        assert torch.equal(_load_rgb(path, (128, 64)), _before_the_switch(path, (128, 64)))
        assert torch.equal(_load_rgb(path, (96, 96), 0.3), _before_the_switch(path, (96, 96), 0.3))


def test_on_drafts_large_jpegs_close_to_the_full_decode_and_leaves_other_files(photos) -> None:
    for path, size, window in ((photos["crop"], (128, 64), None), (photos["frame"], (128, 128), 0.7)):
        drafted, full = _load_rgb(path, size, window, jpeg_draft=True), _before_the_switch(path, size, window)
        assert drafted.shape == full.shape == (3, *size) and drafted.dtype == torch.uint8
        assert not torch.equal(drafted, full)  # a different decode: why it is part of the config hash
        assert (drafted.float() - full.float()).abs().mean() < 3.0  # same picture, same place
    png = photos["png"]
    assert torch.equal(_load_rgb(png, (128, 64), jpeg_draft=True), _before_the_switch(png, (128, 64)))
    small = _load_rgb(photos["crop"], (600, 300), jpeg_draft=True)  # 1024 < 2 x 600: a full decode
    assert torch.equal(small, _before_the_switch(photos["crop"], (600, 300)))


def test_the_switch_is_part_of_the_config_hash_only_when_on(pretrain_root, tmp_path) -> None:
    def trainer(**kw) -> Trainer:
        torch.manual_seed(0)
        return Trainer(micro_saip(), micro_train_config(steps=1, **kw), pretrain_root, tmp_path, seed=3,
                       progress=False)

    off = trainer().config_hash()
    assert trainer(jpeg_draft=False).config_hash() == off  # runs from before the switch still resume
    on = trainer(jpeg_draft=True)
    assert on.config_hash() != off and on.dataset.jpeg_draft
    assert load_preset("saip", "paper")[0].jpeg_draft and not load_preset("saip", "quick")[0].jpeg_draft
