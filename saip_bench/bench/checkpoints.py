"""Pretrained-checkpoint cache shared by every unit (and every shard) that needs the same backbone.

Why: pretraining dominates the cost of a benchmark; a checkpoint is keyed by everything that defines
it (method, backbone, pretraining preset, steps, seed, pretraining-data fingerprint) and is built once,
under a file lock so concurrent shards on a shared disk wait instead of training it twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from saip_bench.backbones import Backbone
from saip_bench.errors import TrainingError, UserError
from saip_bench.specs import stable_hash
from saip_bench.utils import atomic_write_json, file_sha256

MARKER = "checkpoint.json"


class Pretrainer(Protocol):
    def __call__(self, *, method: str, backbone: str, preset: str, data_dir: Path | None, out_dir: Path,
                 seed: int, steps: int | None) -> Path:
        """Pretrain and return the exported backbone file."""


BackboneLoader = Callable[[Path, tuple[int, int] | None], Backbone]


@dataclass(frozen=True)
class CheckpointInfo:
    method: str
    backbone: str
    preset: str
    seed: int
    steps: int | None
    key: str  # identity of the inputs (known before training)
    path: str  # exported backbone file
    sha256: str  # content hash of that file (known after training)
    pretrain_wall_s: float = 0.0
    source: str = "cache"  # cache | user

    def provenance(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_key(method: str, backbone: str, preset: str, seed: int, steps: int | None,
                   data_fingerprint: str, bf16_native: bool) -> str:
    """``bf16_native``: whether the pretraining device runs bf16 autocast natively, i.e. whether a preset's
    ``amp: true`` is honoured there (``resolve_amp``); a bf16 and an fp32 run of one preset differ."""
    return stable_hash({"method": method, "backbone": backbone, "preset": preset, "seed": seed,
                        "steps": steps, "data": data_fingerprint, "bf16_native": bool(bf16_native)})


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _process_group_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def default_pretrainer(*, method: str, backbone: str, preset: str, data_dir: Path | None, out_dir: Path,
                       seed: int, steps: int | None) -> Path:
    """The project's one trainer (``saip_bench.pretrain.api.pretrain``); an interrupted pretraining
    left its trainer checkpoint in the cache folder, and is continued from it."""
    from saip_bench.pretrain.api import pretrain
    from saip_bench.pretrain.trainer import CHECKPOINT_NAME

    if data_dir is None:
        raise UserError(f"pretraining {method}/{backbone} needs pretraining images (--pretrain-data)")
    resume = (Path(out_dir) / "checkpoints" / CHECKPOINT_NAME).is_file()
    return Path(pretrain(method, backbone, preset, data_dir, out_dir, seed=seed, steps=steps, resume=resume))


def default_loader(path: Path, img_size: tuple[int, int] | None = None) -> Backbone:
    from saip_bench.pretrain.export import load_backbone

    return load_backbone(path, img_size=img_size)


class CheckpointCache:
    def __init__(self, directory: str | Path, pretrainer: Pretrainer | None = None,
                 loader: BackboneLoader | None = None, is_writer: bool = True) -> None:
        self.directory = Path(directory)
        self.pretrainer = pretrainer or default_pretrainer
        self.loader = loader or default_loader
        self.is_writer = is_writer  # only rank 0 writes the marker
        self._memo: dict[str, CheckpointInfo] = {}
        self._failed: dict[str, str] = {}  # key -> the error of a pretraining that failed in this run
        self.overrides: dict[tuple[str, str], Path] = {}

    def folder(self, method: str, backbone: str, preset: str, seed: int, key: str) -> Path:
        return self.directory / f"{method}__{backbone}__{preset}__seed{seed}__{key}"

    def lookup(self, method: str, backbone: str, preset: str, seed: int, key: str) -> CheckpointInfo | None:
        marker = self.folder(method, backbone, preset, seed, key) / MARKER
        if not marker.exists():
            return None
        info = CheckpointInfo(**json.loads(marker.read_text()))
        return info if Path(info.path).exists() else None

    def ensure(self, method: str, backbone: str, preset: str, seed: int, steps: int | None,
               data_dir: Path | None, data_fingerprint: str, bf16_native: bool) -> CheckpointInfo:
        """The cached checkpoint for these inputs, pretraining it first if needed."""
        if (method, backbone) in self.overrides:
            return self.user_checkpoint(method, backbone, self.overrides[(method, backbone)])
        key = checkpoint_key(method, backbone, preset, seed, steps, data_fingerprint, bf16_native)
        if key in self._memo:
            return self._memo[key]
        if key in self._failed:  # every unit that needs it fails with the first error, none retries it
            raise TrainingError(
                f"pretraining {method}/{backbone} failed earlier in this run: {self._failed[key]}")
        folder = self.folder(method, backbone, preset, seed, key)
        # Under torchrun the ranks train the checkpoint together (DDP), so only rank 0 takes the file lock
        # (it keeps other *runs* out) and tells the others whether there is anything to train. Every rank
        # taking it hung the first pretraining: the holder waited in DDP for ranks blocked on the lock.
        group = _process_group_size() > 1
        leader = not group or torch.distributed.get_rank() == 0
        lock = _file_lock(folder.with_name(folder.name + ".lock")) if leader else contextlib.nullcontext()
        with lock:
            found = [self.lookup(method, backbone, preset, seed, key) if leader else None]
            if group:
                torch.distributed.broadcast_object_list(found, src=0)
            info = found[0]
            if info is None:
                start = time.perf_counter()
                try:
                    export = self.pretrainer(method=method, backbone=backbone, preset=preset,
                                             data_dir=data_dir, out_dir=folder, seed=seed, steps=steps)
                except Exception as exc:
                    self._failed[key] = f"{type(exc).__name__}: {exc}"
                    raise
                info = CheckpointInfo(method, backbone, preset, seed, steps, key, str(Path(export).resolve()),
                                      file_sha256(export), round(time.perf_counter() - start, 3))
                if self.is_writer:
                    atomic_write_json(folder / MARKER, asdict(info))
                if group:
                    torch.distributed.barrier()  # the marker exists before any rank moves on
        self._memo[key] = info
        return info

    def user_checkpoint(self, method: str, backbone: str, path: Path) -> CheckpointInfo:
        if not Path(path).exists():
            raise UserError(f"checkpoint {path} for {method}/{backbone} does not exist")
        sha = file_sha256(path)
        return CheckpointInfo(method, backbone, "user", -1, None, sha, str(Path(path).resolve()), sha, 0.0,
                              "user")

    def load(self, info: CheckpointInfo, img_size: tuple[int, int] | None = None) -> Backbone:
        """A fresh backbone from the checkpoint (tasks may fine-tune it in place)."""
        return self.loader(Path(info.path), img_size)


def parse_checkpoint_overrides(items: list[str] | None) -> dict[tuple[str, str], Path]:
    """``method/backbone=PATH`` entries from the command line."""
    overrides: dict[tuple[str, str], Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        method, slash, backbone = name.partition("/")
        if not sep or not slash or not method or not backbone or not path:
            raise UserError(f"--checkpoint expects method/backbone=PATH, got {item!r}")
        overrides[(method, backbone)] = Path(path)
    return overrides
