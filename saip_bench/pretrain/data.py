"""The pretraining image folder and a deterministic, resumable, rank-aware batch sampler.

Layout (docs/layouts.md, ``pretrain``): ``<root>/images/<identity>/<file>.jpg`` (a flat ``images/*.jpg``
or LUPerson-style ``train/<id>/*.jpg`` also work), optional ``backgrounds/*.jpg`` and ``keypoints.json``
(``{relative path: [[x, y, v] * 17]}``, paths relative to ``images/``).

The folder is read through its pool index (``saip_bench.data.pool_index``): built once (in parallel, on
rank 0 under torch.distributed), rebuilt when the pool changes, memory-mapped by every rank and worker, so
a worker holds no per-image Python objects whatever the pool's size.

The loader only decodes and resizes each image once (to ``source_size``); all views are made batched
on the training device (``views.py``). Each sample also carries a seed that depends only on
(run seed, epoch, index), so its views are the same whatever the world size.

Backgrounds of SAIP's multi-person canvas (``background_source``): ``<root>/backgrounds/`` when it holds
images, else the pool's own images (the authors' release reads "any image source, e.g. LUPerson or
ImageNet": a random other pool image, a random square window of it, then the usual canvas crop), or a
folder given with ``--backgrounds DIR``. docs/pretraining.md compares the choices.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from saip_bench.data.jpeg import open_rgb
from saip_bench.data.pool_index import IMAGE_SUFFIXES, PoolIndex, load_index
from saip_bench.errors import DataFormatError
from saip_bench.pretrain.keypoint_file import NUM_KEYPOINTS, keypoints_path, read_keypoints

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES", "MAX_BAD_IMAGES", "MAX_UNREADABLE_FRACTION", "PretrainDataset", "PretrainFolder",
    "ResumableBatchSampler", "collate", "images_to_float", "sample_seed",
]

# Unreadable images: the index skips those whose header cannot be read, up to this share of the pool (more
# means a wrong or damaged pool: an error); a loader process replaces an image that fails to decode by the
# next one, up to MAX_BAD_IMAGES times, then stops with the count.
MAX_UNREADABLE_FRACTION = 0.01
MAX_BAD_IMAGES = 100


def sample_seed(run_seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (run seed, epoch, index): independent of batch layout and world size."""
    state = np.random.SeedSequence([run_seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _load_rgb(
    path: Path, size: tuple[int, int], square_window: float | None = None, jpeg_draft: bool = False
) -> torch.Tensor:
    """Decode ``path`` to a (3, H, W) uint8 tensor of ``size``; ``square_window`` (a position in [0, 1])
    first cuts the full-width square at that height (a background window of a tall person crop).

    ``jpeg_draft``: a JPEG at least twice ``size`` (or its window at least twice) is decoded at 1/2, 1/4 or
    1/8 first (``saip_bench.data.jpeg``); the window is placed in stored pixels either way. Keypoints need
    no change: they are scaled from the stored size to ``size``, which the draft does not alter."""
    target = (size[1], size[0])
    try:
        region = None
        if square_window is not None:
            with Image.open(path) as header:  # the header only: the window decides the draft
                width, height = header.size
            side = min(width, height)
            top = round((height - side) * square_window)
            left = round((width - side) * square_window)
            region = (left, top, left + side, top + side)
        region_size = None if region is None else (region[2] - region[0], region[3] - region[1])
        decoded = open_rgb(path, target if jpeg_draft else None, region_size)
        array = np.asarray(decoded.resize(target, Image.BILINEAR, region), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataFormatError(path, "a readable RGB image", f"{type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(array).permute(2, 0, 1)


class PathList(Sequence[Path]):
    """Absolute paths of some files of a pool index, resolved on access (nothing stored per file)."""

    def __init__(self, index: PoolIndex, numbers: str) -> None:
        self.index, self.numbers = index, numbers  # numbers: the index array naming the files

    def __len__(self) -> int:
        return len(self.index.array(self.numbers))

    @overload
    def __getitem__(self, i: int) -> Path: ...
    @overload
    def __getitem__(self, i: slice) -> list[Path]: ...
    def __getitem__(self, i: int | slice) -> Path | list[Path]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.index.root / self.index.rel(int(self.index.array(self.numbers)[i]))


class PretrainFolder:
    """What a pretraining root holds, read through its pool index (see the module docstring)."""

    def __init__(self, root: Path, index: PoolIndex) -> None:
        self.root = Path(root)
        self.index = index
        self._keypoints: dict[str, list[list[float]]] | None = None

    @classmethod
    def scan(cls, root: str | Path, progress: bool = True, rebuild: bool = False) -> PretrainFolder:
        """Open (or build on first use, or rebuild when stale) the index of ``root``."""
        root = Path(root)
        index = load_index(root, rebuild=rebuild, progress=progress)
        if len(index.train) == 0:
            raise DataFormatError(root / index.image_dir, "at least one readable .jpg/.png image", "none")
        bad, total = index.unreadable, len(index.train) + index.unreadable
        if bad > max(10, MAX_UNREADABLE_FRACTION * total):
            raise DataFormatError(
                root / index.image_dir,
                f"at most {MAX_UNREADABLE_FRACTION:.0%} unreadable images",
                f"{bad} of {total} (first: {', '.join(index.meta['unreadable_first'][:3])})",
            )
        return cls(root, index)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "index": self.index}  # the keypoints dict stays in the main process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.index, self._keypoints = state["root"], state["index"], None

    @property
    def images(self) -> PathList:
        return PathList(self.index, "train")

    @property
    def labels(self) -> np.ndarray:
        """Identity number of each image (-1 for flat files), int32, memory-mapped."""
        return self.index.labels

    @property
    def identities(self) -> Sequence[str]:
        return self.index.identities

    @property
    def backgrounds(self) -> PathList:
        return PathList(self.index, "backgrounds")

    @property
    def image_sizes(self) -> np.ndarray:
        """(n, 2) height, width of each training image, read from the headers when indexing."""
        return self.index.hw[self.index.train]

    @property
    def image_dir(self) -> Path:
        return self.root / self.index.image_dir

    @property
    def keypoints(self) -> dict[str, list[list[float]]] | None:
        """``keypoints.json``, read when first asked for (a million-entry dict only for methods using it)."""
        keypoint_file = keypoints_path(self.root)
        if self._keypoints is None and keypoint_file.is_file():
            self._keypoints, _provenance = read_keypoints(keypoint_file)  # the one reader (keypoint_file.py)
        return self._keypoints


class PretrainDataset(Dataset):
    """Items are ``(index, epoch)`` pairs (from ``ResumableBatchSampler``) -> a dict of tensors.

    ``backgrounds`` (when ``with_backgrounds``): None = ``<root>/backgrounds/`` if it has images, else the
    pool's own images; ``"pool"`` = the pool's images even if the folder exists; a path = the images of
    that folder (indexed like a pool). ``background_source`` says which was used (for the checkpoint)."""

    def __init__(
        self,
        folder: PretrainFolder,
        source_size: tuple[int, int],
        run_seed: int,
        with_backgrounds: bool = False,
        background_size: tuple[int, int] = (256, 256),
        with_labels: bool = False,
        with_keypoints: bool = False,
        backgrounds: str | Path | None = None,
        max_bad_images: int = MAX_BAD_IMAGES,
        jpeg_draft: bool = False,
    ) -> None:
        self.folder = folder
        self.jpeg_draft = jpeg_draft
        self.source_size = tuple(source_size)
        self.run_seed = run_seed
        self.with_backgrounds = with_backgrounds
        self.background_size = tuple(background_size)
        self.with_labels = with_labels
        self.with_keypoints = with_keypoints
        self.max_bad_images = max_bad_images
        self.bad_images = 0  # per process: each loader worker counts its own
        self.background_source: str | None = None
        self._background_paths: PathList | None = None
        if with_backgrounds:
            self._background_paths, self.background_source = self._choose_backgrounds(backgrounds)
        if with_labels and bool((np.asarray(folder.labels) < 0).any()):
            raise DataFormatError(folder.root / "images", "images inside identity sub-folders", "flat files")
        self._keypoint_array: np.ndarray | None = None
        if with_keypoints:
            if folder.keypoints is None:
                raise DataFormatError(
                    keypoints_path(folder.root), "keypoints for every image (saip-bench data keypoints)",
                    "missing file",
                )
            self._keypoint_array = self._keypoints_array()

    def _choose_backgrounds(self, backgrounds: str | Path | None) -> tuple[PathList | None, str]:
        folder = self.folder
        if backgrounds is None and len(folder.backgrounds):
            where = folder.root / "backgrounds"
            return folder.backgrounds, f"folder:{where} ({len(folder.backgrounds)} images)"
        if backgrounds is None or str(backgrounds) == "pool":
            return None, f"pool:{folder.image_dir} (square windows of random other pool images)"
        directory = Path(backgrounds)
        if not directory.is_dir():
            raise DataFormatError(directory, "a folder of background images (--backgrounds)", "no folder")
        index = load_index(directory, flat=True, progress=False)
        if len(index.train) == 0:
            raise DataFormatError(directory, "background images (*.jpg, *.png)", "none")
        return PathList(index, "train"), f"folder:{directory} ({len(index.train)} images)"

    def _keypoints_array(self) -> np.ndarray:
        """(n, 17, 3) keypoints rescaled to ``source_size``, one row per image (all-invisible when missing).

        Keys may be relative to the root (``images/a/b.jpg``, as the synthetic world writes) or to
        ``images/`` (``a/b.jpg``) or be a bare file name. Why an array: workers share it, a dict of a million
        entries is copied page by page into each of them."""
        folder = self.folder
        table = folder.keypoints
        assert table is not None
        sizes = folder.image_sizes
        out = np.zeros((len(folder.images), NUM_KEYPOINTS, 3), np.float32)
        prefix = f"{folder.index.image_dir}/" if folder.index.image_dir else ""
        for i, number in enumerate(folder.index.train.tolist()):
            rel = folder.index.rel(number)
            candidates = (rel, rel[len(prefix):] if rel.startswith(prefix) else rel, rel.rsplit("/", 1)[-1])
            raw = next((table[c] for c in candidates if c in table), None)
            if raw is None:
                continue
            points = np.asarray(raw, np.float32).reshape(NUM_KEYPOINTS, 3)  # checked by read_keypoints
            height, width = (int(v) for v in sizes[i])
            points[:, 0] *= self.source_size[1] / width
            points[:, 1] *= self.source_size[0] / height
            out[i, : len(points)] = points
        return out

    def _keypoints(self, path: Path) -> torch.Tensor:
        """Keypoints of the image at ``path`` (rescaled to ``source_size``), all-invisible when missing."""
        assert self._keypoint_array is not None
        position = list(self.folder.images).index(Path(path))
        return torch.from_numpy(self._keypoint_array[position].copy())

    def __len__(self) -> int:
        return len(self.folder.images)

    def _image(self, index: int) -> tuple[int, torch.Tensor]:
        """The image of ``index``, or of the next readable one: a bad file is reported and skipped, up to
        ``max_bad_images`` per process (then a clear error with the count)."""
        images = self.folder.images
        for attempt in range(len(images)):
            current = (index + attempt) % len(images)
            try:
                return current, _load_rgb(images[current], self.source_size, jpeg_draft=self.jpeg_draft)
            except DataFormatError as exc:
                self.bad_images += 1
                log.warning("skipping unreadable image (%d so far in this loader process): %s",
                            self.bad_images, exc)
                if self.bad_images > self.max_bad_images:
                    raise DataFormatError(
                        self.folder.image_dir,
                        f"at most {self.max_bad_images} unreadable images per loader process",
                        f"{self.bad_images}, the last {exc.path}",
                    ) from exc
        raise DataFormatError(self.folder.image_dir, "a readable image", "none")  # pragma: no cover

    def _background(self, index: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed ^ 0x5EED)
        if self._background_paths is not None:
            path = self._background_paths[int(rng.integers(len(self._background_paths)))]
            return _load_rgb(path, self.background_size, jpeg_draft=self.jpeg_draft)
        n = len(self.folder.images)
        other = int(rng.integers(max(1, n - 1)))
        other = other + 1 if n > 1 and other >= index else other  # never the sample's own image
        window = float(rng.random())
        for attempt in range(n):
            try:
                path = self.folder.images[(other + attempt) % n]
                return _load_rgb(path, self.background_size, window, self.jpeg_draft)
            except DataFormatError:
                continue
        raise DataFormatError(self.folder.image_dir, "a readable image", "none")  # pragma: no cover

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        seed = sample_seed(self.run_seed, epoch, index)
        used, image = self._image(index)
        item: dict[str, Any] = {
            "image": image,
            "index": torch.tensor(index, dtype=torch.long),
            "sample_seed": torch.tensor(seed, dtype=torch.long),
        }
        if self.with_backgrounds:
            item["background"] = self._background(index, seed)
        if self.with_labels:
            item["label"] = torch.tensor(int(self.folder.labels[used]), dtype=torch.long)
        if self._keypoint_array is not None:
            item["keypoints"] = torch.from_numpy(self._keypoint_array[used].copy())
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return batch


HOST_KEYS = ("sample_seed", "label", "keypoints")  # per-sample metadata the methods read on the host


def images_to_float(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 images -> float [0, 1] on ``device`` (done in the main process, not the workers).

    ``HOST_KEYS`` stay on the host: views draw their random parameters from ``sample_seed`` there, HAP
    builds its body-part masks from the keypoints there and the supervised method checks its labels
    there (moving what the model needs itself); reading any of them back from a GPU would stall every
    micro-step."""
    out = {}
    for key, value in batch.items():
        if key in HOST_KEYS:
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
