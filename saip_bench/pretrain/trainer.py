"""The one pretraining loop, shared by SAIP and every baseline method.

It owns: AdamW with parameter groups (no weight decay for biases, norms, 1-D tensors and the method's
``no_weight_decay_names``), per-step linear warm-up + half-cosine LR, gradient accumulation, bf16
autocast (CPU and CUDA), gradient clipping, atomic checkpoints every N steps, exact resume (weights,
optimiser, EMA teacher and method buffers, RNG states of every rank, data position), a NaN/collapse
guard, rich progress with every loss term and images/s, a JSON-lines log, and DDP under ``torchrun``
(gloo on CPU, NCCL on CUDA; one process works without any launcher).

Everything random is a function of (seed, global step, micro-step, rank, sample index), so the same seed
on CPU gives the same numbers, and a resumed run continues exactly where the checkpoint was taken.

Checkpoints are confirmed before they count. The state after step s is known to be good only once the
loss computed *on it* (step s+1's forward) passed the guard, so a periodic checkpoint is first written to
``checkpoints/candidate.pt`` and renamed over ``checkpoints/last.pt`` only when step s+1's loss and
gradient norm are finite and below ``guard.max_loss`` (the final state, which no later loss can confirm, is
saved straight to ``last.pt`` when its weights are finite). A diverged update therefore never replaces the
last good checkpoint: when the guard fires the candidate is deleted and ``failure.json`` names the step of
the ``last.pt`` that is kept. A run killed between writing a candidate and confirming it resumes from the
candidate, whose first resumed step confirms (or rejects) it, so kill-and-resume stays exact.

Starting in a folder (``Trainer.fit``): a compatible checkpoint there is continued (``resume=True``
only insists that one exists); ``overwrite=True`` deletes checkpoints, log and failure report and starts
afresh; a checkpoint of another configuration, seed or world size is a clear error. ``resume_from=CKPT``
continues CKPT's weights, optimiser, EMA and step, and with ``allow_config_change=True`` even under another
configuration (e.g. a lower lr after a divergence), which is recorded in the checkpoint's ``lineage``.
``log.jsonl`` is cut back to the step a run starts from, so it never repeats a step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn
from torch.utils.data import DataLoader

from saip_bench.backbones import Backbone
from saip_bench.devices import (
    compile_backbone,
    compile_scope,
    compile_step,
    compiled_graphs,
    compiled_step_inputs,
    enable_speed,
    fused_optimizer_ok,
    recompile_limit,
)
from saip_bench.errors import SpecError, TrainingError, UserError
from saip_bench.logsinks import RunLog, resolve_loggers
from saip_bench.pretrain.base import PretrainMethod
from saip_bench.pretrain.data import (
    PretrainDataset,
    PretrainFolder,
    ResumableBatchSampler,
    collate,
    images_to_float,
)
from saip_bench.specs import stable_hash
from saip_bench.utils import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    autocast,
    console,
    resolve_amp,
)

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).with_name("presets")
CHECKPOINT_NAME = "last.pt"  # the last confirmed-good checkpoint
CANDIDATE_NAME = "candidate.pt"  # a periodic checkpoint waiting for the next step's loss to confirm it
LOG_NAME = "log.jsonl"
FAILURE_NAME = "failure.json"


# ---------------------------------------------------------------------------------------------- config
class GuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_embedding_std: float = 1e-4
    patience: int = Field(20, ge=1)
    max_loss: float = 1e6  # a finite loss above this is treated as divergence


class TrainConfig(BaseModel):
    """Trainer hyper-parameters; ``presets/_trainer.yaml`` + ``presets/<method>.yaml`` fill it."""

    model_config = ConfigDict(extra="forbid")
    steps: int | None = Field(None, ge=1, description="optimiser steps (or give epochs)")
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(16, ge=1, description="per-process micro-batch")
    accum_steps: int = Field(1, ge=1)
    blr: float = 2.5e-4
    lr: float | None = Field(None, description="absolute LR; default blr * effective batch / 256")
    min_lr: float = 0.0
    warmup_steps: int | None = Field(None, ge=0)
    warmup_epochs: float | None = Field(None, ge=0)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = Field(None, gt=0)
    amp: bool = True
    checkpoint_every: int = Field(50, ge=1)
    log_every: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0)
    img_size: tuple[int, int] = (256, 128)
    source_size: tuple[int, int] = (256, 128)
    background_size: tuple[int, int] = (256, 256)
    drop_path_rate: float = 0.0
    jpeg_draft: bool = Field(
        False, description="decode a JPEG at 1/2, 1/4 or 1/8 when it stays at least source_size / "
        "background_size (saip_bench.data.jpeg): faster, different pixels, so part of the config hash")
    freeze_patch_embed: bool = Field(
        False, description="keep a ViT's patch projection at its random init (MoCo v3's 'random patch "
        "projection', Chen et al. 2021): the tokens keep a random linear code of the patch pixels")
    guard: GuardConfig = Field(default_factory=GuardConfig)
    compile: bool | Literal["blocks", "step"] = Field(
        False, description="torch.compile: true or 'blocks' compiles the backbone's blocks "
        "(devices.compile_backbone), 'step' the method's whole forward and backward (devices.compile_step); "
        "a speed switch, not part of what is trained: a run resumes with it on or off")

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps / epochs")
        if self.warmup_steps is not None and self.warmup_epochs is not None:
            raise ValueError("give at most one of warmup_steps / warmup_epochs")
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of preset names")
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into ``base``: nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_names(method: str | None = None) -> list[str]:
    names = set(_read_yaml(PRESET_DIR / "_trainer.yaml"))
    if method is not None and (PRESET_DIR / f"{method}.yaml").is_file():
        names &= set(_read_yaml(PRESET_DIR / f"{method}.yaml")) | names
    return sorted(names)


def load_preset(
    method: str, preset: str, overrides: dict[str, Any] | None = None
) -> tuple[TrainConfig, dict[str, Any]]:
    """(trainer config, method config) of ``preset`` for ``method``; ``overrides`` patch the trainer part."""
    trainer_presets = _read_yaml(PRESET_DIR / "_trainer.yaml")
    if preset not in trainer_presets:
        raise UserError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(trainer_presets))}")
    method_file = PRESET_DIR / f"{method}.yaml"
    method_presets = _read_yaml(method_file) if method_file.is_file() else {}
    entry = method_presets.get(preset, {}) or {}
    if not isinstance(entry, dict) or set(entry) - {"train", "method"}:
        raise SpecError(f"{method_file}: preset {preset!r} must hold only 'train' and 'method' mappings")
    train_dict = deep_merge(trainer_presets[preset] or {}, entry.get("train") or {})
    train_dict = deep_merge(train_dict, overrides or {})
    try:
        train_cfg = TrainConfig.model_validate(train_dict)
    except ValidationError as exc:
        raise SpecError(f"preset {preset!r} for {method!r}: {exc}") from exc
    return train_cfg, dict(entry.get("method") or {})


# ------------------------------------------------------------------------------------------ distributed
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device | None = None) -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device is None or device.type == "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank), device


# ----------------------------------------------------------------------------------------------- optim
def freeze_patch_embedding(backbone: Backbone) -> None:
    """MoCo v3's random patch projection: the ViT's patch embedding gets no gradient (and so no optimiser
    state); a checkpoint then carries the random projection it started from."""
    if backbone.family != "vit":
        raise SpecError(f"freeze_patch_embed needs a ViT backbone, not the {backbone.family} {backbone.name}")
    backbone.body.patch_embed.requires_grad_(False)


def param_groups(method: PretrainMethod, weight_decay: float) -> list[dict[str, Any]]:
    """Decay for weight matrices; none for biases, norms, 1-D tensors and ``no_weight_decay_names``."""
    skip = method.no_weight_decay_names()
    decay, no_decay = [], []
    for name, param in method.trainable_parameters():
        short = name.rsplit(".", 1)[-1]
        if param.ndim <= 1 or name.endswith(".bias") or name in skip or short in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then half-cycle cosine to ``min_lr`` (MAE/SAIP, per step)."""
    if warmup > 0 and step < warmup:
        return lr * step / warmup
    if total <= warmup:
        return lr
    progress = (step - warmup) / (total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint32)[0])


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    step: int
    total_steps: int
    last: dict[str, float]
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Drive ``method`` on the images of ``data_dir``; checkpoints and logs go to ``out_dir``."""

    def __init__(
        self,
        method: PretrainMethod,
        config: TrainConfig,
        data_dir: str | Path,
        out_dir: str | Path,
        seed: int = 0,
        device: torch.device | str | None = None,
        resume: bool = False,
        progress: bool = True,
        dist_info: DistInfo | None = None,
        method_name: str | None = None,
        stop_after: int | None = None,
        overwrite: bool = False,
        resume_from: str | Path | None = None,
        allow_config_change: bool = False,
        overwrite_also: tuple[str, ...] = (),
        backgrounds: str | Path | None = None,
        loggers: Sequence[str] | None = None,
    ) -> None:
        """``resume``: insist on a checkpoint in ``out_dir`` (one is continued anyway when it is there);
        ``overwrite``: delete the folder's checkpoints, log, failure report and ``overwrite_also`` (names
        in ``out_dir``) and start afresh; ``resume_from``: continue this checkpoint file instead, under
        another configuration only with ``allow_config_change``; ``backgrounds``: the canvas backgrounds
        (``PretrainDataset``: default ``<data>/backgrounds/`` or else the pool's own images); ``loggers``:
        where the logged scalars go (``saip_bench.logsinks``; default: the process's ``--logger``)."""
        if overwrite and resume:
            raise UserError("--resume and --overwrite contradict each other: give one")
        if resume_from is not None and resume:
            raise UserError("give --resume (this --out's checkpoint) or --resume-from CKPT, not both")
        if allow_config_change and resume_from is None:
            raise UserError("--allow-config-change needs --resume-from CKPT (the checkpoint to continue)")
        if resume_from is not None and not Path(resume_from).is_file():
            raise UserError(f"--resume-from: no checkpoint at {resume_from}")
        self.loggers = resolve_loggers(loggers)
        self.overwrite = overwrite
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.allow_config_change = allow_config_change
        self.overwrite_also = tuple(overwrite_also)
        self.method = method
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.amp_requested = config.amp
        self.amp = resolve_amp(config.amp, self.device)  # the request, unless this device emulates bf16
        # the config as it runs: the config hash, checkpoints and the export say fp32 where bf16 fell back
        self.config = config.model_copy(update={"amp": self.amp})
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.dist = dist_info or DistInfo()
        self.resume = resume
        self.progress = progress and self.dist.is_main
        self.method_name = method_name or method.name
        self.stop_after = stop_after  # testing hook: raise after this many steps of this run
        self.folder = PretrainFolder.scan(data_dir, progress=self.progress)  # the pool index (rank 0 builds)
        self.dataset = PretrainDataset(
            self.folder,
            config.source_size,
            seed,
            with_backgrounds=method.needs_backgrounds,
            background_size=config.background_size,
            with_labels=method.needs_labels,
            with_keypoints=method.needs_keypoints,
            backgrounds=backgrounds,
            jpeg_draft=config.jpeg_draft,
        )
        world = self.dist.world_size
        self.effective_batch = config.batch_size * config.accum_steps * world
        per_epoch = len(self.dataset) // (config.batch_size * world) // config.accum_steps
        if per_epoch < 1 and config.epochs is not None:
            raise UserError(
                f"{len(self.dataset)} images give no full step of effective batch {self.effective_batch}"
            )
        self.steps_per_epoch = max(1, per_epoch)
        self.total_steps = config.steps or max(1, round(config.epochs * self.steps_per_epoch))
        if config.warmup_steps is not None:
            self.warmup_steps = config.warmup_steps
        elif config.warmup_epochs is not None:
            self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        else:
            self.warmup_steps = 0
        self.lr = config.lr if config.lr is not None else config.blr * self.effective_batch / 256
        self.method.to(self.device)
        enable_speed(self.device)  # TF32 for what runs in float32 on a GPU
        if config.freeze_patch_embed:
            freeze_patch_embedding(method.backbone)
        scope = compile_scope(config.compile)
        self.compiled_step = scope == "step"
        if scope == "blocks":
            compile_backbone(method.backbone)
        elif self.compiled_step:
            compile_step(method)
        groups = param_groups(method, config.weight_decay)
        self.optimizer = torch.optim.AdamW(  # fused on a GPU: one kernel per step (provenance: speed)
            groups, lr=self.lr, betas=tuple(config.betas), fused=fused_optimizer_ok(groups) or None
        )
        self.model: nn.Module = method
        if self.dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                method,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=method.find_unused_parameters,
            )
        self.step = 0
        self.history: list[dict[str, float]] = []
        # the resumes of this run from another checkpoint (resume_from; config changes named), oldest first
        self.lineage: list[dict[str, Any]] = []
        self._pending = False  # candidate.pt holds the current state, not yet confirmed by a loss

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        """The last confirmed-good checkpoint."""
        return self.out_dir / "checkpoints" / CHECKPOINT_NAME

    @property
    def candidate_path(self) -> Path:
        """A periodic checkpoint that no loss has confirmed yet (renamed to ``last.pt`` once one does)."""
        return self.out_dir / "checkpoints" / CANDIDATE_NAME

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_NAME

    def config_hash(self) -> str:
        train = self.config.model_dump(mode="json")
        if not train["freeze_patch_embed"]:  # off = the behaviour before the flag: earlier runs still resume
            del train["freeze_patch_embed"]
        if not train["jpeg_draft"]:  # off = full decodes, as before the switch existed
            del train["jpeg_draft"]
        del train["compile"]  # how fast, not what: a run resumes with --compile on or off
        return stable_hash(
            {
                "train": train,
                "method": self.method.hyperparameters(),
                "method_name": self.method_name,
                "backbone": self.method.backbone.name,
            }
        )

    def _rng_state(self) -> dict[str, Any]:
        state = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        if not self.dist.enabled:
            return {"ranks": [state]}
        gathered: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(gathered, state)
        return {"ranks": gathered}

    def save_checkpoint(self, path: Path | None = None) -> Path:
        """The full state to ``path`` (default ``last.pt``), atomically; collective: every rank calls it."""
        path = path or self.checkpoint_path
        rng = self._rng_state()  # collective: every rank takes part
        if self.dist.is_main:
            atomic_torch_save(
                {
                    "step": self.step,
                    "total_steps": self.total_steps,
                    "method_name": self.method_name,
                    "backbone": self.method.backbone.name,
                    "model": self.method.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "rng": rng,
                    "train_config": self.config.model_dump(mode="json"),
                    "method_config": self.method.hyperparameters(),
                    "config_hash": self.config_hash(),
                    "world_size": self.dist.world_size,
                    "seed": self.seed,
                    "history": self.history,
                    "lineage": self.lineage,
                    "data": self.data_provenance(),
                },
                path,
            )
        if self.dist.enabled:
            dist.barrier()
        return path

    def data_provenance(self) -> dict[str, Any]:
        """What the run read: the pool index's listing hash and size, and the canvas background source."""
        return {
            "pool_index": self.folder.index.listing_hash,
            "images": len(self.dataset),
            "backgrounds": self.dataset.background_source,
        }

    def _weights_finite(self) -> bool:
        """Every floating tensor of the method's state (student, EMA teacher, buffers) finite on all ranks."""
        finite = all(
            bool(torch.isfinite(t).all()) for t in self.method.state_dict().values() if t.is_floating_point()
        )
        if self.dist.enabled:
            flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
            dist.all_reduce(flag)
            finite = float(flag) == 0.0
        return finite

    def _confirm_candidate(self) -> None:
        """The loss on the candidate's state passed the guard: it becomes the last good checkpoint."""
        if self.dist.is_main:
            os.replace(self.candidate_path, self.checkpoint_path)
        self._pending = False

    @staticmethod
    def _read_step(path: Path) -> int | None:
        """The step of the checkpoint at ``path`` (memory-mapped: the weights are not read), or None."""
        if not path.is_file():
            return None
        try:
            return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["step"])
        except Exception:  # only used to report which step a checkpoint holds
            return None

    def _config_differences(self, state: dict[str, Any], limit: int = 6) -> str:
        """``train.lr 0.001 -> 0.002, ...``: the settings where the checkpoint's configuration differs."""

        def flat(prefix: str, value: Any) -> dict[str, Any]:
            value = json.loads(json.dumps(value, default=str))
            if not isinstance(value, dict):
                return {prefix: value}
            out: dict[str, Any] = {}
            for key, item in value.items():
                out.update(flat(f"{prefix}.{key}", item))
            return out

        old = {
            **flat("train", state.get("train_config") or {}),
            **flat("method", state.get("method_config") or {}),
        }
        new = {
            **flat("train", self.config.model_dump(mode="json")),
            **flat("method", self.method.hyperparameters()),
        }
        missing = object()
        changed = [
            f"{key} {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}"
            for key in sorted(set(old) | set(new))
            if old.get(key, missing) != new.get(key, missing)
        ]
        if not changed:
            return f"config hash {state.get('config_hash')} -> {self.config_hash()}"
        more = f", and {len(changed) - limit} more" if len(changed) > limit else ""
        return ", ".join(changed[:limit]) + more

    def load_checkpoint(
        self, path: str | Path | None = None, allow_config_change: bool = False, explicit: bool = False
    ) -> str:
        """Restore weights, optimiser, EMA/buffers, step, history, lineage and every RNG from ``path``
        (default ``last.pt``); returns the checkpoint's config hash.

        A checkpoint of another method/backbone, seed or world size is refused; one of another
        configuration too, unless ``allow_config_change``. ``explicit``: ``path`` came from
        ``--resume-from`` (the error messages then point at that flag's ways out).
        """
        path = Path(path) if path is not None else self.checkpoint_path
        if not path.is_file():
            raise UserError(f"--resume: no checkpoint at {path}")
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # a truncated file cannot happen (atomic writes) but a foreign one can
            raise TrainingError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
        if explicit:
            ways_out = "pick another --resume-from checkpoint"
        else:
            ways_out = (
                "to keep it, write this run to a new --out; to discard it and start afresh, add --overwrite"
            )
        backbone = self.method.backbone.name
        if state.get("method_name") != self.method_name or state.get("backbone") != backbone:
            raise TrainingError(
                f"{path}: a checkpoint of {state.get('method_name')}/{state.get('backbone')}, not of "
                f"{self.method_name}/{backbone}; {ways_out}"
            )
        if state.get("world_size") != self.dist.world_size or state.get("seed") != self.seed:
            raise TrainingError(
                f"{path}: resume needs the same world size and seed (checkpoint: world "
                f"{state.get('world_size')}, seed {state.get('seed')}; this run: world "
                f"{self.dist.world_size}, seed {self.seed}); {ways_out}"
            )
        old_hash = str(state.get("config_hash"))
        if old_hash != self.config_hash() and not allow_config_change:
            differences = self._config_differences(state)
            if explicit:
                raise TrainingError(
                    f"{path}: checkpoint was written with another configuration ({differences}); add "
                    "--allow-config-change to continue its weights with these settings (recorded in the "
                    "checkpoint's and the export's lineage)"
                )
            raise TrainingError(
                f"{path}: checkpoint was written with another configuration ({differences}); {ways_out}; "
                f"to continue its weights with the new settings, add --resume-from {path} "
                "--allow-config-change"
            )
        try:
            self.method.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(f"{path}: its weights do not fit this model ({first})") from exc
        # the optimiser's state (moments, step counts) comes from the checkpoint, its hyper-parameters
        # (betas, weight decay) from this run's configuration, which may differ under allow_config_change
        hyper = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise TrainingError(f"{path}: its optimiser state does not fit this model ({exc})") from exc
        for group, values in zip(self.optimizer.param_groups, hyper, strict=True):
            group.update(values)
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.lineage = list(state.get("lineage", []))
        rng = state["rng"]["ranks"][self.dist.rank]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        return old_hash

    def _start(self) -> None:
        """Decide where this run starts (see the module docstring), then make the folder agree with it.

        Every rank decides from the files as they are (reading only); then rank 0 deletes (overwrite) and
        cuts the log back to the starting step, between two barriers.
        """
        last, candidate = self.checkpoint_path, self.candidate_path
        loaded = False
        if self.resume_from is not None:
            source = self.resume_from
            here = [p for p in (candidate, last) if p.is_file()]
            own = any(_same_file(p, source) for p in here)  # this folder's own (e.g. last good) checkpoint
            if self.overwrite and own:
                raise UserError(
                    f"--overwrite would delete the --resume-from checkpoint {source}: drop --overwrite"
                )
            if here and not own and not self.overwrite:
                raise UserError(
                    f"{self.out_dir} already holds the checkpoint {here[-1]}: add --overwrite to replace it "
                    f"by a run continued from {source}, or write this run to a new --out"
                )
            old_hash = self.load_checkpoint(source, self.allow_config_change, explicit=True)
            changed = old_hash != self.config_hash()
            self.lineage.append(
                {
                    "resumed_from": str(source.resolve()),
                    "step": self.step,
                    "config_changed_from": old_hash if changed else None,
                }
            )
            loaded = True
        elif not self.overwrite:
            existing = candidate if candidate.is_file() else last if last.is_file() else None
            if existing is not None:
                self.load_checkpoint(existing)
                self._pending = existing == candidate  # killed before the next loss confirmed it
                loaded = True
            elif self.resume:
                raise UserError(f"--resume: no checkpoint at {last}")
        if not loaded:
            torch.manual_seed(_mix_seed(self.seed, self.dist.rank))
        if self.dist.enabled:
            dist.barrier()  # every rank has read what it needs before rank 0 changes the folder
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.overwrite:
                for name in (CHECKPOINT_NAME, CANDIDATE_NAME):
                    (self.out_dir / "checkpoints" / name).unlink(missing_ok=True)
                for name in (LOG_NAME, FAILURE_NAME, *self.overwrite_also):
                    (self.out_dir / name).unlink(missing_ok=True)
            elif self.resume_from is not None and not _same_file(candidate, self.resume_from):
                # an unconfirmed state of the run this one replaces: never to be picked up by a later rerun
                candidate.unlink(missing_ok=True)
            self._truncate_log(self.step)
        if self.dist.enabled:
            dist.barrier()

    def _truncate_log(self, step: int) -> None:
        """Keep the log rows of steps <= ``step`` (atomically), so a resumed run never repeats a step."""
        path = self.log_path
        if not path.is_file():
            return
        if step == 0:
            path.unlink()
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int | float) and row["step"] <= step:
                kept.append(line + "\n")
        atomic_write_text(path, "".join(kept))

    # ------------------------------------------------------------------ data
    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.config
        sampler = ResumableBatchSampler(
            len(self.dataset),
            cfg.batch_size,
            self.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start=self.step * cfg.accum_steps,
            total=self.total_steps * cfg.accum_steps,
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        yield from loader

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        self._start()
        self.method.train()
        batches = self._batches()
        start_step = self.step
        log_path = self.log_path
        progress_ctx = self._progress() if self.progress else contextlib.nullcontext(None)
        last: dict[str, float] = dict(self.history[-1]) if self.history else {}
        bad_std_steps = 0
        graphs_before = graphs_seen = compiled_graphs()
        with progress_ctx as bar, self._run_log() as run_log:
            task = bar.add_task("pretrain", total=self.total_steps, completed=self.step) if bar else None
            while self.step < self.total_steps:
                tic = time.perf_counter()
                logs, images = self._train_step(batches)
                elapsed = time.perf_counter() - tic
                logs["images_per_s"] = images * self.dist.world_size / max(elapsed, 1e-9)
                logs["step"] = float(self.step)
                if self.compiled_step:
                    graphs_seen = self._note_new_graphs(graphs_before, graphs_seen, start_step)
                    logs["compile/graphs"] = float(graphs_seen - graphs_before)
                last = logs
                if self.dist.is_main and (self.step % self.config.log_every == 0):
                    self.history.append(logs)
                    if run_log.jsonl:
                        with log_path.open("a") as handle:
                            handle.write(json.dumps(logs, sort_keys=True) + "\n")
                    wait_share = logs["time/data_wait_s"] / max(elapsed, 1e-9)  # the input pipeline's share
                    terms = {k: v for k, v in logs.items() if k != "step"}
                    run_log.scalars({**terms, "time/data_wait_share": wait_share}, self.step)
                if bar is not None:
                    bar.update(task, completed=self.step, description=self._describe(logs))
                std = logs.get("stat/embedding_std")
                if std is not None and std < self.config.guard.min_embedding_std:
                    bad_std_steps += 1
                    if bad_std_steps >= self.config.guard.patience:
                        raise TrainingError(
                            f"representation collapse at step {self.step}: embedding std {std:.2e} < "
                            f"{self.config.guard.min_embedding_std:.0e} for {bad_std_steps} steps; "
                            f"{self._kept_checkpoint_text()}"
                        )
                else:
                    bad_std_steps = 0
                at_end = self.step == self.total_steps
                if at_end or self.step % self.config.checkpoint_every == 0:
                    if not self._weights_finite():
                        self._stop_unhealthy(
                            logs, logs["grad_norm"], f"non-finite weights after step {self.step}",
                            "they were not saved",
                        )
                    if at_end:  # no later loss can confirm the final state: finite weights suffice
                        self.save_checkpoint()
                        if self.dist.is_main:
                            self.candidate_path.unlink(missing_ok=True)
                        self._pending = False
                    else:
                        self.save_checkpoint(self.candidate_path)
                        self._pending = True
                if self.stop_after is not None and self.step - start_step >= self.stop_after:
                    raise KeyboardInterrupt(f"stop_after={self.stop_after}")
        return TrainResult(self.step, self.total_steps, last, self.checkpoint_path, self.history)

    def _run_log(self) -> RunLog:
        """This run's scalar sinks (rank 0 only), starting where ``_start`` put the step."""
        run_log = RunLog(self.out_dir, self.loggers, name=f"pretrain/{self.method_name}",
                         config={**self.config.model_dump(mode="json"), "seed": self.seed,
                                 "method": self.method_name, "world_size": self.dist.world_size},
                         enabled=self.dist.is_main)
        run_log.start(self.step)
        return run_log

    def _train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> tuple[dict[str, float], int]:
        cfg = self.config
        lr = lr_at(self.step, self.total_steps, self.warmup_steps, self.lr, cfg.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        terms: dict[str, torch.Tensor] = {}  # float64 on the device: read once per step, below
        images = 0
        data_wait = 0.0
        for micro in range(cfg.accum_steps):
            waited = time.perf_counter()
            batch = images_to_float(next(batches), self.device)
            data_wait += time.perf_counter() - waited
            batch["step_seed"] = torch.tensor(_mix_seed(self.seed, self.step, micro), dtype=torch.long)
            generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.step, micro, self.dist.rank))
            images += int(batch["image"].shape[0])
            with torch.no_grad():
                views = self.method.make_views(batch, generator)
                if self.compiled_step:  # one input layout, one compiled graph (eager keeps its layouts)
                    views = compiled_step_inputs(views, self.method.dynamic_view_dims)
            sync = micro == cfg.accum_steps - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()  # type: ignore[operator]
            with ctx:
                with autocast(self.device, self.amp):
                    out = self.model(views)
                loss = out["loss"]
                (loss.float() / cfg.accum_steps).backward()
            for key, value in out.items():
                if key == "loss" or key.startswith(("loss/", "stat/")):
                    term = value.detach().float().double() / cfg.accum_steps
                    terms[key] = terms[key] + term if key in terms else term
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if cfg.clip_grad is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        else:
            grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            norm = torch.stack(grads).norm() if grads else torch.zeros((), device=self.device)
        sums, grad_norm, healthy = self._read_step_terms(terms, norm.double())
        if not healthy:
            self._stop_unhealthy(
                sums, grad_norm, f"non-finite or exploding loss at step {self.step + 1}",
                "the bad update was not applied",
            )
        if self._pending:  # this loss was computed on the candidate's state and passed: it is good
            self._confirm_candidate()
        self.optimizer.step()
        self.step += 1
        self.method.on_after_step(self.step, self.total_steps)
        sums["lr"] = lr
        sums["grad_norm"] = grad_norm
        sums["time/data_wait_s"] = data_wait  # blocked on the loader (this rank): the input-pipeline share
        return sums, images

    def _read_step_terms(
        self, terms: dict[str, torch.Tensor], grad_norm: torch.Tensor
    ) -> tuple[dict[str, float], float, bool]:
        """(loss terms averaged over ranks, grad norm, healthy on every rank) with ONE device-to-host read.

        Why: a ``float(tensor)`` per loss term, the grad norm and the health flag stalled a GPU step about
        ten times. The guard still sees every step: a rank with a non-finite or too-large loss or norm
        marks the packed vector, and the sum over ranks carries that mark to all of them."""
        keys = sorted(terms)
        loss = terms["loss"]
        bad = ~torch.isfinite(loss) | ~torch.isfinite(grad_norm) | (loss >= self.config.guard.max_loss)
        packed = torch.stack([*(terms[k] for k in keys), grad_norm, bad.double()])
        if self.dist.enabled:
            dist.all_reduce(packed)
        values = packed.tolist()
        world = self.dist.world_size if self.dist.enabled else 1
        sums = {k: v / world for k, v in zip(keys, values, strict=False)}
        return sums, values[len(keys)] / world, values[-1] == 0.0

    def _kept_checkpoint_text(self) -> str:
        step = self._read_step(self.checkpoint_path)
        if step is None:
            source = f"; {self.resume_from} is untouched" if self.resume_from is not None else ""
            return f"no checkpoint of this run passed the guard yet{source}"
        return (
            f"the last good checkpoint is step {step}: {self.checkpoint_path} (to continue it with other "
            f"settings, e.g. a lower lr, add --resume-from {self.checkpoint_path} --allow-config-change)"
        )

    def _stop_unhealthy(self, sums: dict[str, float], grad_norm: float, what: str, consequence: str) -> None:
        """Stop on a diverged state (every rank gets here together). Nothing is saved: the unconfirmed
        candidate is deleted, ``last.pt`` stays the last state whose own loss passed the guard, and
        ``failure.json`` names its step."""
        if self.dist.is_main:
            self.candidate_path.unlink(missing_ok=True)
        self._pending = False
        kept_step = self._read_step(self.checkpoint_path)
        if self.dist.is_main:
            atomic_write_json(
                self.out_dir / FAILURE_NAME,
                {
                    "step": self.step,
                    "reason": what,
                    "loss_terms": sums,
                    "grad_norm": grad_norm,
                    "checkpoint": str(self.checkpoint_path) if kept_step is not None else None,
                    "checkpoint_step": kept_step,
                    "resumed_from": str(self.resume_from) if self.resume_from is not None else None,
                },
            )
        terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(sums.items()))
        raise TrainingError(
            f"{what} ({terms}; grad norm {grad_norm:.4g}); {consequence}; {self._kept_checkpoint_text()} "
            f"(details in {self.out_dir / FAILURE_NAME})"
        )

    # ------------------------------------------------------------------ display
    def _progress(self):  # rich Progress
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def _note_new_graphs(self, graphs_before: int, graphs_seen: int, start_step: int) -> int:
        """Dynamo's graph count after a step of the compiled step. Rank 0 says when a step after this
        run's first compiled again (it paid a compilation) and, once, when the run's graphs reach dynamo's
        limit for one function, past which that function's new sizes run eager."""
        graphs = compiled_graphs()
        if graphs > graphs_seen and self.step > start_step + 1 and self.dist.is_main:
            total, limit = graphs - graphs_before, recompile_limit()
            log.info("compile step: step %d compiled %d new graph(s), %d in this run: a size or a value the "
                     "step guards on changed (TORCH_LOGS=recompiles says which)", self.step,
                     graphs - graphs_seen, total)
            if total >= limit > graphs_seen - graphs_before:
                log.warning("compile step: %d graphs in this run, dynamo's limit for one function "
                            "(torch._dynamo.config.recompile_limit): new sizes may now run eager", total)
        return graphs

    @staticmethod
    def _describe(logs: dict[str, float]) -> str:
        terms = " ".join(
            f"{k.split('/', 1)[1]}={v:.3f}" for k, v in sorted(logs.items()) if k.startswith("loss/")
        )
        return f"loss={logs['loss']:.3f} {terms} lr={logs['lr']:.2e} {logs['images_per_s']:.1f} img/s"

