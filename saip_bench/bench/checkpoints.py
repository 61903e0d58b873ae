"""Pretrained-checkpoint cache shared by every unit (and every shard) that needs the same backbone.

Why: pretraining dominates the cost of a benchmark; a checkpoint is keyed by everything that defines
it (method, backbone, pretraining preset and its resolved settings, the pretraining code, steps, seed,
pretraining-data fingerprint) and is built once,
under an owner lock (``saip_bench.locks``: pid and host in the lock file) so concurrent shards or runs
on a shared disk wait instead of training it twice, and are told whom they wait for.

Provenance names a checkpoint by ``weights_hash``, a hash of its tensors (name, dtype, shape, bytes, in
key order): equal weights give equal hashes whichever process wrote the file. ``sha256`` (the file's
bytes) stays for old readers, but differs between processes for identical weights (the safetensors
header's metadata order is not fixed).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from saip_bench.backbones import Backbone
from saip_bench.errors import DataFormatError, SaipBenchError, TrainingError, UserError
from saip_bench.locks import default_wait, owner_lock
from saip_bench.specs import stable_hash
from saip_bench.utils import atomic_write_json, file_sha256

MARKER = "checkpoint.json"
PRETRAIN_WAIT_S = 72 * 3600.0  # how long a run waits for another process pretraining the same checkpoint


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
    sha256: str  # hash of that file's bytes (differs between processes for equal weights; see weights_hash)
    pretrain_wall_s: float = 0.0
    source: str = "cache"  # cache | user | external
    weights_hash: str = ""  # hash of the tensors (stable for equal weights); "" in markers before issue 27
    # a published checkpoint (timm, MAE, HAP, PATH, plain PyTorch) converted to ``path``: its file, weights
    # hash and key-mapping report (issue 24); None for our own exports
    external: dict[str, Any] | None = None

    def provenance(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_key(method: str, backbone: str, preset: str, seed: int, steps: int | None,
                   data_fingerprint: str, bf16_native: bool) -> str:
    """``bf16_native``: whether the pretraining device runs bf16 autocast natively, i.e. whether a preset's
    ``amp: true`` is honoured there (``resolve_amp``); a bf16 and an fp32 run of one preset differ."""
    return stable_hash({"method": method, "backbone": backbone, "preset": preset, "seed": seed,
                        "steps": steps, "data": data_fingerprint, "bf16_native": bool(bf16_native),
                        "recipe": pretraining_fingerprint(method, preset)})


PRETRAINING_CODE = ("pretrain", "backbones")  # sub-packages whose source defines what a pretraining produces


@functools.cache
def pretraining_code_version() -> str:
    """Hash of the source of the code that pretrains and builds backbones (as the synthetic world's
    ``code_version``): the cache is shared by every checkout of a user, so a checkout whose trainer differs
    must train its own checkpoint instead of reusing another's."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in PRETRAINING_CODE:
        for path in sorted((package / name).rglob("*.py")):
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def pretraining_fingerprint(method: str, preset: str) -> str:
    """What a checkpoint's name does not say: the preset as resolved for ``method`` (trainer and method
    settings; an edited preset file retrains) and the pretraining code's version."""
    from saip_bench.pretrain.trainer import load_preset

    try:
        train, method_settings = load_preset(method, preset)
        train_settings = train.model_dump(mode="json", exclude={"compile"})  # how fast, not what is trained
        settings: Any = {"train": train_settings, "method": method_settings}
    except SaipBenchError:  # a preset the trainer does not know (a test's fake pretrainer): its name alone
        settings = None
    return stable_hash({"settings": settings, "code": pretraining_code_version()})


def weights_hash(path: str | Path, length: int = 16) -> str:
    """Hash of a checkpoint's tensors: name, dtype, shape and bytes of each, in sorted key order.

    Why not the file's sha256: two processes saving identical weights write different safetensors
    headers (metadata order), so provenance could not tell equal checkpoints. ``.safetensors`` is read
    tensor by tensor; other files must be a ``torch.save``'d mapping of tensors (a state dict).
    """
    path = Path(path)
    digest = hashlib.sha256()

    def add(name: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())

    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                for name in sorted(handle.keys()):
                    add(name, handle.get_tensor(name))
        else:
            from saip_bench.pretrain.external import read_checkpoint, unwrap

            state = read_checkpoint(path)  # weights_only; an MAE/HAP ``args`` Namespace is allowed
            state = state.get("state_dict", state) if isinstance(state, Mapping) else state
            if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
                state = unwrap(state, path)[0]  # a published checkpoint's wrappers (model, ...)
            if not isinstance(state, Mapping):
                raise DataFormatError(path, "a state dict (a mapping of names to tensors)",
                                      type(state).__name__)
            for name in sorted(state):
                add(str(name), state[name])
    except FileNotFoundError as exc:
        raise DataFormatError(path, "checkpoint weights", "nothing at that path") from exc
    except DataFormatError:
        raise
    except Exception as exc:  # safetensors / torch raise many types on corrupt files
        raise DataFormatError(path, "readable checkpoint weights", f"{type(exc).__name__}: {exc}") from exc
    return digest.hexdigest()[:length]


def _process_group_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def default_pretrainer(*, method: str, backbone: str, preset: str, data_dir: Path | None, out_dir: Path,
                       seed: int, steps: int | None) -> Path:
    """The project's one trainer (``saip_bench.pretrain.api.pretrain``); an interrupted pretraining
    left its trainer checkpoint in the cache folder, and is continued from it."""
    from saip_bench.pretrain.api import export_untrained, needs_training_data, pretrain
    from saip_bench.pretrain.trainer import CHECKPOINT_NAME

    if data_dir is None:
        if not needs_training_data(method):  # random init: the seeded backbone, no pool needed
            return export_untrained(method, backbone, preset, out_dir, seed=seed)
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
        with contextlib.ExitStack() as held:
            found: tuple[CheckpointInfo | None, str | None] = (None, None)
            error: Exception | None = None
            if leader:
                try:
                    held.enter_context(owner_lock(
                        folder.with_name(folder.name + ".lock"), f"checkpoint cache entry {folder}",
                        f"pretraining {method}/{backbone} seed {seed}", wait=default_wait(PRETRAIN_WAIT_S),
                        hint="it is being pretrained; wait, or use another --cache-dir"))
                    cached = self.lookup(method, backbone, preset, seed, key)
                    found = (self._with_weights_hash(cached, folder), None)
                except Exception as exc:  # busy lock, unreadable marker: every rank must hear of it
                    if not group:
                        raise
                    error, found = exc, (None, f"{type(exc).__name__}: {exc}")
            if group:
                box = [found]
                torch.distributed.broadcast_object_list(box, src=0)
                found = box[0]
                if found[1] is not None:  # remembered: a later lone call on one rank must not broadcast
                    self._failed[key] = found[1]
                    raise error or TrainingError(f"pretraining {method}/{backbone}: rank 0 could not "
                                                 f"open the cache entry {folder}: {found[1]}")
            info = found[0]
            if info is None:
                info = self._pretrain(key, folder, leader, group, method=method, backbone=backbone,
                                      preset=preset, data_dir=data_dir, seed=seed, steps=steps)
        self._memo[key] = info
        return info

    def _pretrain(self, key: str, folder: Path, leader: bool, group: bool, *, method: str, backbone: str,
                  preset: str, data_dir: Path | None, seed: int, steps: int | None) -> CheckpointInfo:
        """Train, then describe the export (rank 0 hashes it; the marker once all went well). Under a group
        every rank leaves through one all-gather, failed or not: a rank that raised on its own while the
        others went on to the next collective hung the run (seen in CI), so a failure on any rank is
        raised on every rank, with the failing rank's message, and remembered like a local one."""
        start = time.perf_counter()
        info: CheckpointInfo | None = None
        failure: str | None = None
        error: Exception | None = None
        try:
            export = self.pretrainer(method=method, backbone=backbone, preset=preset, data_dir=data_dir,
                                     out_dir=folder, seed=seed, steps=steps)
            if leader:
                info = CheckpointInfo(method, backbone, preset, seed, steps, key, str(Path(export).resolve()),
                                      file_sha256(export), round(time.perf_counter() - start, 3),
                                      weights_hash=weights_hash(export))
        except Exception as exc:
            error, failure = exc, f"{type(exc).__name__}: {exc}"
        if group:
            outcomes: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(outcomes, (info, failure))
            info = outcomes[0][0]
            failed = [(rank, why) for rank, (_, why) in enumerate(outcomes) if why is not None]
            if failed and error is None:
                rank, why = failed[0]
                failure = f"{why} (on rank {rank})"
                error = TrainingError(f"pretraining {method}/{backbone} failed on rank {rank}: {why}")
        if error is not None:
            self._failed[key] = failure or str(error)
            raise error
        assert info is not None
        unwritten: str | None = None
        if leader and self.is_writer:  # only once every rank finished well: a rerun trusts the marker
            try:
                atomic_write_json(folder / MARKER, asdict(info))
            except OSError as exc:
                unwritten = f"{type(exc).__name__}: {exc}"
        if group:  # the marker exists (or every rank knows it does not) before any rank moves on
            box = [unwritten]
            torch.distributed.broadcast_object_list(box, src=0)
            unwritten = box[0]
        if unwritten is not None:
            self._failed[key] = unwritten
            raise TrainingError(f"pretraining {method}/{backbone}: could not write {folder / MARKER}: "
                                f"{unwritten}")
        return info

    def _with_weights_hash(self, info: CheckpointInfo | None, folder: Path) -> CheckpointInfo | None:
        """A marker written before ``weights_hash`` existed gets it (computed once, written back)."""
        if info is None or info.weights_hash:
            return info
        info = replace(info, weights_hash=weights_hash(info.path))
        if self.is_writer:
            atomic_write_json(folder / MARKER, asdict(info))
        return info

    def user_checkpoint(self, method: str, backbone: str, path: Path) -> CheckpointInfo:
        """A checkpoint given on the command line; its key (feature cache) is the weights' hash, so the
        same weights in two files or written by two processes share cached features."""
        if not Path(path).exists():
            raise UserError(f"checkpoint {path} for {method}/{backbone} does not exist")
        stat = Path(path).stat()
        memo = f"user:{method}/{backbone}:{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if memo not in self._memo and not _is_export(path):
            self._memo[memo] = self.external_checkpoint(method, backbone, Path(path))
        if memo not in self._memo:  # asked once per unit: hash the file once per run
            content = weights_hash(path)
            self._memo[memo] = CheckpointInfo(method, backbone, "user", -1, None, content,
                                              str(Path(path).resolve()), file_sha256(path), 0.0, "user",
                                              weights_hash=content)
        return self._memo[memo]

    def external_checkpoint(self, method: str, backbone: str, path: Path) -> CheckpointInfo:
        """A published checkpoint (no sidecar): remapped once into ``<cache>/external/`` as an export,
        so loaders and feature caches see one format; provenance names the original file and mapping."""
        from saip_bench.pretrain.export import read_sidecar
        from saip_bench.pretrain.external import convert_external

        content = weights_hash(path)
        folder = self.directory / "external" / f"{backbone}__{content}"
        export = folder / "backbone.safetensors"
        lock = owner_lock(folder.with_name(folder.name + ".lock"), f"external checkpoint {folder}",
                          f"converting {path} for {backbone}", wait=default_wait(600.0))
        with lock:
            if not (export.is_file() and (folder / "backbone.json").is_file()):
                convert_external(path, export, backbone)
        source = dict(read_sidecar(export)["external"], path=str(Path(path).resolve()))
        return CheckpointInfo(method, backbone, "external", -1, None, f"{backbone}-{content}",
                              str(export.resolve()), file_sha256(export), 0.0, "external",
                              weights_hash=content, external=source)

    def load(self, info: CheckpointInfo, img_size: tuple[int, int] | None = None) -> Backbone:
        """A fresh backbone from the checkpoint (tasks may fine-tune it in place)."""
        return self.loader(Path(info.path), img_size)


def _is_export(path: str | Path) -> bool:
    from saip_bench.pretrain.external import is_exported

    return is_exported(path)


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
