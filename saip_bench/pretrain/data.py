"""The pretraining image folder and a deterministic, resumable, rank-aware batch sampler.

Layout (docs/layouts.md, ``pretrain``): ``<root>/images/<identity>/<file>.jpg`` (a flat ``images/*.jpg``
or LUPerson-style ``train/<id>/*.jpg`` also work), optional ``backgrounds/*.jpg`` and ``keypoints.json``
(``{relative path: [[x, y, v] * 17]}``, paths relative to ``images/``).

The loader only decodes and resizes each image once (to ``source_size``); all views are made batched
on the training device (``views.py``). Each sample also carries a seed that depends only on
(run seed, epoch, index), so its views are the same whatever the world size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from saip_bench.errors import DataFormatError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def sample_seed(run_seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (run seed, epoch, index): independent of batch layout and world size."""
    state = np.random.SeedSequence([run_seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _load_rgb(path: Path, size: tuple[int, int]) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError) as exc:
        raise DataFormatError(path, "a readable RGB image", type(exc).__name__) from exc
    return torch.from_numpy(array).permute(2, 0, 1)


@dataclass
class PretrainFolder:
    """What a pretraining root holds."""

    root: Path
    images: list[Path]
    labels: list[int]
    identities: list[str]
    backgrounds: list[Path]
    keypoints: dict[str, list[list[float]]] | None

    @classmethod
    def scan(cls, root: str | Path) -> PretrainFolder:
        root = Path(root)
        image_dir = next((root / d for d in ("images", "train") if (root / d).is_dir()), None)
        if image_dir is None:
            raise DataFormatError(
                root,
                "a pretraining root with an images/ folder (docs/layouts.md)",
                "no images/ or train/ folder" if root.exists() else "missing folder",
            )
        images = _list_images(image_dir)
        if not images:
            raise DataFormatError(image_dir, "at least one .jpg/.png image", "none")
        identities = sorted({p.parent.name for p in images if p.parent != image_dir})
        id_index = {name: i for i, name in enumerate(identities)}
        labels = [id_index.get(p.parent.name, -1) if p.parent != image_dir else -1 for p in images]
        background_dir = root / "backgrounds"
        backgrounds = _list_images(background_dir) if background_dir.is_dir() else []
        keypoints = None
        keypoint_file = root / "keypoints.json"
        if keypoint_file.is_file():
            try:
                keypoints = json.loads(keypoint_file.read_text())
            except json.JSONDecodeError as exc:
                raise DataFormatError(
                    keypoint_file, "JSON {relative path: [[x, y, v] * 17]}", str(exc)
                ) from exc
            if not isinstance(keypoints, dict):
                raise DataFormatError(keypoint_file, "a JSON object", type(keypoints).__name__)
        return cls(root, images, labels, identities, backgrounds, keypoints)

    @property
    def image_dir(self) -> Path:
        return self.images[0].parent if not self.identities else self.images[0].parent.parent


class PretrainDataset(Dataset):
    """Items are ``(index, epoch)`` pairs (from ``ResumableBatchSampler``) -> a dict of tensors."""

    def __init__(
        self,
        folder: PretrainFolder,
        source_size: tuple[int, int],
        run_seed: int,
        with_backgrounds: bool = False,
        background_size: tuple[int, int] = (256, 256),
        with_labels: bool = False,
        with_keypoints: bool = False,
    ) -> None:
        self.folder = folder
        self.source_size = tuple(source_size)
        self.run_seed = run_seed
        self.with_backgrounds = with_backgrounds
        self.background_size = tuple(background_size)
        self.with_labels = with_labels
        self.with_keypoints = with_keypoints
        if with_backgrounds and not folder.backgrounds:
            raise DataFormatError(
                folder.root / "backgrounds", "background images (*.jpg) for the canvas", "none"
            )
        if with_labels and any(label < 0 for label in folder.labels):
            raise DataFormatError(folder.root / "images", "images inside identity sub-folders", "flat files")
        if with_keypoints and folder.keypoints is None:
            raise DataFormatError(folder.root / "keypoints.json", "keypoints for every image", "missing file")

    def __len__(self) -> int:
        return len(self.folder.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        path = self.folder.images[index]
        seed = sample_seed(self.run_seed, epoch, index)
        item: dict[str, Any] = {
            "image": _load_rgb(path, self.source_size),
            "index": torch.tensor(index, dtype=torch.long),
            "sample_seed": torch.tensor(seed, dtype=torch.long),
        }
        if self.with_backgrounds:
            rng = np.random.default_rng(seed ^ 0x5EED)
            background = self.folder.backgrounds[int(rng.integers(len(self.folder.backgrounds)))]
            item["background"] = _load_rgb(background, self.background_size)
        if self.with_labels:
            item["label"] = torch.tensor(self.folder.labels[index], dtype=torch.long)
        if self.with_keypoints:
            item["keypoints"] = self._keypoints(path)
        return item

    def _keypoints(self, path: Path) -> torch.Tensor:
        """Keypoints of ``path``; keys may be relative to the root (``images/a/b.jpg``, as the
        synthetic world writes) or to ``images/`` (``a/b.jpg``). Missing entries are all-invisible."""
        assert self.folder.keypoints is not None
        candidates = [path.relative_to(self.folder.root).as_posix()]
        if self.folder.image_dir in path.parents:
            candidates.append(path.relative_to(self.folder.image_dir).as_posix())
        candidates.append(path.name)
        raw = next((self.folder.keypoints[c] for c in candidates if c in self.folder.keypoints), None)
        if raw is None:
            return torch.zeros(17, 3)
        points = torch.tensor(raw, dtype=torch.float32).reshape(-1, 3)
        with Image.open(path) as image:
            width, height = image.size
        points[:, 0] *= self.source_size[1] / width
        points[:, 1] *= self.source_size[0] / height
        return points


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return batch


def images_to_float(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 images -> float [0, 1] on ``device`` (done in the main process, not the workers).

    ``sample_seed`` stays on the host: views draw their random parameters there, and reading seeds back
    from a GPU would stall every micro-step."""
    out = {}
    for key, value in batch.items():
        if key == "sample_seed":
            out[key] = value
            continue
        value = value.to(device, non_blocking=True)
        if key in ("image", "background") and value.dtype == torch.uint8:
            value = value.float().div_(255.0)
        out[key] = value
    return out


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Deterministic shuffled micro-batches for one rank, resumable at any micro-batch position.

    Epoch ``e`` is ``randperm(n)`` from a generator seeded with (seed, e); it is cut into global
    micro-batches of ``micro_batch * world_size`` (the remainder is dropped, like DistributedSampler with
    ``drop_last``) and rank ``r`` takes the ``r``-th contiguous slice of each, so the union over ranks of
    one micro-step equals the single-process micro-batch of the same global size.
    """

    def __init__(
        self,
        num_samples: int,
        micro_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        total: int | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.micro_batch = micro_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start
        self.total = total
        self.global_batch = micro_batch * world_size
        if self.global_batch > num_samples:
            raise DataFormatError(
                "pretraining data",
                f"at least {self.global_batch} images for one global micro-batch",
                f"{num_samples}",
            )
        self.per_epoch = num_samples // self.global_batch

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def position(self, micro_step: int) -> tuple[int, int]:
        return divmod(micro_step, self.per_epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        micro_step = self.start
        epoch, offset = self.position(micro_step)
        order = self._epoch_order(epoch)
        while self.total is None or micro_step < self.total:
            if offset == self.per_epoch:
                epoch, offset = epoch + 1, 0
                order = self._epoch_order(epoch)
            begin = offset * self.global_batch + self.rank * self.micro_batch
            indices = order[begin : begin + self.micro_batch].tolist()
            yield [(index, epoch) for index in indices]
            offset += 1
            micro_step += 1

    def __len__(self) -> int:
        if self.total is None:
            return self.per_epoch
        return max(0, self.total - self.start)


def epochs_to_micro_steps(num_samples: int, global_micro_batch: int, epochs: float) -> int:
    return math.floor(num_samples // global_micro_batch * epochs)
