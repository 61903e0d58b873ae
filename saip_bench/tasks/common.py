"""Pieces every task shares: image loading, optimisers with the paper's groups, schedules, the fit loop,
frozen-feature caching and sample limits.

Why: nine tasks, one way to train a head; a fix to the loop or the optimiser groups lands everywhere.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import hashlib
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.devices import constant, fused_optimizer_ok, host_to_device, to_device, unit_float
from saip_bench.errors import DataFormatError, SpecError, UserError
from saip_bench.logsinks import RunLog
from saip_bench.specs import ParamGroups, Protocol, Schedule, stable_hash
from saip_bench.tasks import parallel
from saip_bench.utils import atomic_torch_save, atomic_write_text, autocast, console

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FROZEN_KINDS = frozenset({"linear", "frozen"})
INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
# our optimizer names -> timm's (timm's "sgd" is Nesterov; the recipes' SGD is plain momentum 0.9)
TIMM_OPTIMIZERS = {"adamw": "adamw", "adam": "adam", "sgd": "momentum"}


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB; a corrupt or missing file raises DataFormatError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError as exc:
        raise DataFormatError(path, "an image file", "nothing at that path") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataFormatError(path, "a readable image", f"{type(exc).__name__}: {exc}") from exc


def normalize(images: torch.Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
              ) -> torch.Tensor:
    """(B, 3, H, W) floats in [0, 1] -> normalised with ``stats`` (mean, std; default ImageNet's). The
    statistics are device constants (``devices.constant``): no copy per call."""
    mean, std = stats or (IMAGENET_MEAN, IMAGENET_STD)
    return (images - constant(tuple(mean), images.device).view(1, -1, 1, 1)) / constant(
        tuple(std), images.device).view(1, -1, 1, 1)


def pil_to_uint8(
    image: Image.Image, size: tuple[int, int] | None = None, interpolation: str = "bilinear"
) -> torch.Tensor:
    """PIL RGB -> (3, H, W) uint8, resized to ``size`` = (height, width) with ``interpolation`` (a
    protocol's resize rule: TransReID trains on bicubic resizes and tests on bilinear ones). What a loader
    carries: a quarter of the bytes of the floats, made float on the device (``devices.unit_float``)."""
    if size is not None and (image.height, image.width) != tuple(size):
        image = image.resize((size[1], size[0]), INTERPOLATION[interpolation])
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def pil_to_tensor(
    image: Image.Image, size: tuple[int, int] | None = None, interpolation: str = "bilinear"
) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [0, 1] (``pil_to_uint8`` / 255)."""
    return pil_to_uint8(image, size, interpolation).float().div_(255.0)


def is_frozen(protocol_kind: str) -> bool:
    return protocol_kind in FROZEN_KINDS


def set_backbone_trainable(backbone: nn.Module, trainable: bool) -> None:
    for parameter in backbone.parameters():
        parameter.requires_grad_(trainable)
    backbone.train(trainable)


def _layer_id(name: str, num_layers: int) -> int:
    """ViT layer index for layer-wise LR decay: embeddings 0, block i -> i + 1, rest num_layers + 1.

    Why not timm's ``param_groups_layer_decay``: its fine group matcher puts the final norm in the last
    block's layer, so the last block runs undecayed, one level off the BEiT / mmpose rule (12 + 2 layers)
    that the pose recipe configures and our CPU protocols were tuned with.
    """
    if name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def _layer_scales(backbone: Backbone, layer_decay: float) -> dict[str, float]:
    """LR scale per backbone parameter name: ``decay ** (num_layers + 1 - layer)``. ViTs only, as before:
    a hybrid's or ConvNet's stages are not the blocks the rule was tuned for."""
    if backbone.family != "vit":
        return {}
    num_layers = len(getattr(backbone.body, "blocks", []))
    return {name: layer_decay ** (num_layers + 1 - _layer_id(name, num_layers))
            for name, _ in backbone.body.named_parameters()}


def no_decay_kind(name: str, parameter: torch.Tensor) -> str | None:
    """The ``ParamGroups.no_decay`` category of a parameter, or None when it is an ordinary weight."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith("bias"):
        return "bias"
    if leaf in ("pos_embed",):
        return "pos_embed"
    if leaf in ("cls_token", "reg_token", "mask_token", "dist_token"):
        return "cls_token"
    if parameter.ndim <= 1:
        return "norm"
    return None


def param_groups(
    backbone: Backbone | None,
    head: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    backbone_lr_scale: float = 1.0,
    rules: ParamGroups | None = None,
) -> list[dict[str, Any]]:
    """Optimizer groups per ``rules`` (decay exemptions, bias and pattern LR multipliers) and optional ViT
    layer-wise LR decay. The default rules exempt biases, norms and tokens, as before."""
    rules = rules or ParamGroups()
    exempt = set(rules.no_decay)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    scales = _layer_scales(backbone, layer_decay) if backbone is not None and layer_decay is not None else {}

    def add(parameter: nn.Parameter, name: str, lr_scale: float) -> None:
        if not parameter.requires_grad:
            return
        kind = no_decay_kind(name, parameter)
        matched = [mult for pattern, mult in rules.lr_mult.items() if fnmatch.fnmatchcase(name, pattern)]
        if matched:  # a named module's own factor covers its bias too (IRRA: classifier bias x5, not x10)
            lr_scale *= math.prod(matched)
        elif kind == "bias":
            lr_scale *= rules.bias_lr
        key = (0.0 if kind in exempt else weight_decay, lr_scale)
        groups.setdefault(key, []).append(parameter)

    if backbone is not None:
        for name, parameter in backbone.body.named_parameters():
            add(parameter, f"backbone.{name}", backbone_lr_scale * scales.get(name, 1.0))
    for name, parameter in head.named_parameters():
        add(parameter, f"head.{name}", 1.0)
    return [
        {"params": params, "weight_decay": wd, "lr_scale": scale}
        for (wd, scale), params in sorted(groups.items(), key=lambda item: item[0])
    ]


def schedule_param_groups(
    backbone: Backbone | None, head: nn.Module, schedule: Schedule
) -> list[dict[str, Any]]:
    """``param_groups`` with everything the schedule declares (weight decay, layer decay, group rules)."""
    return param_groups(backbone, head, schedule.weight_decay,
                        schedule.layer_decay if backbone is not None else None, rules=schedule.groups)


def build_optimizer(groups: list[dict[str, Any]], schedule: Schedule) -> torch.optim.Optimizer:
    """The schedule's optimizer over ``groups`` through timm's factory (eps and betas when declared)."""
    from timm.optim import create_optimizer_v2

    for group in groups:
        group["lr"] = schedule.lr * group.get("lr_scale", 1.0)
    extra: dict[str, Any] = {}
    if schedule.optimizer in ("adam", "adamw"):
        extra["fused"] = fused_optimizer_ok(groups) or None  # one kernel per step on a GPU (speed)
        if schedule.eps is not None:
            extra["eps"] = schedule.eps
        if schedule.betas is not None:
            extra["betas"] = tuple(schedule.betas)
    return create_optimizer_v2(groups, opt=TIMM_OPTIMIZERS[schedule.optimizer], lr=schedule.lr,
                               weight_decay=schedule.weight_decay, momentum=0.9, **extra)


def warmup_steps(schedule: Schedule, steps_per_epoch: int) -> int:
    """Warm-up length in optimiser steps: ``warmup_steps`` when declared, else ``warmup_epochs``."""
    if schedule.warmup_steps is not None:
        return schedule.warmup_steps
    return round(schedule.warmup_epochs * steps_per_epoch)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: Schedule,
              steps_per_epoch: int | None = None) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up (from ``warmup_start``), then cosine (down to
    ``min_lr``; measured after the warm-up unless ``warmup_prefix`` is False) / step milestones / constant
    / SGDR (cosine to ``min_lr`` until ``cycle_start_epochs``, then cosine restarts from ``cycle_lr`` every
    ``cycle_epochs``, as SCHP; epochs are ``steps_per_epoch`` steps)."""
    if warmup_steps and step < warmup_steps:
        if schedule.warmup_start is None:
            return (step + 1) / warmup_steps
        return schedule.warmup_start + (1.0 - schedule.warmup_start) * step / warmup_steps
    if schedule.scheduler == "sgdr":
        per_epoch = steps_per_epoch or max(1, round(total_steps / max(schedule.epochs, 1e-9)))
        start = max(warmup_steps, round(float(schedule.cycle_start_epochs or 0.0) * per_epoch))
        if step < start:
            cosine = 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / max(1, start - warmup_steps)))
            return schedule.min_lr + (1.0 - schedule.min_lr) * cosine
        length = max(1, round(float(schedule.cycle_epochs or 1.0) * per_epoch))
        cosine = 0.5 * (1.0 + math.cos(math.pi * ((step - start) % length) / length))
        return schedule.min_lr + (schedule.cycle_lr - schedule.min_lr) * cosine
    if schedule.scheduler == "cosine":
        offset = warmup_steps if schedule.warmup_prefix else 0
        progress = (step - offset) / max(1, total_steps - offset)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return schedule.min_lr + (1.0 - schedule.min_lr) * cosine
    if schedule.scheduler == "step" and schedule.milestones:
        epochs_done = step / max(1, total_steps) * schedule.epochs
        return 0.1 ** sum(epochs_done >= m for m in schedule.milestones)
    return 1.0


def apply_drop_path(backbone: Backbone, rate: float) -> bool:
    """Rebuild the timm body with ``drop_path_rate=rate`` and the same weights, so timm's own rule (rates
    rising linearly over the blocks) sets every block; returns whether anything changed.

    Why rebuild: the backbone arrives built and loaded by the runner; timm sets stochastic depth only when
    it creates a model, and a rebuild keeps its per-architecture rule instead of a hand-written copy.
    """
    import timm

    if float(backbone.timm_kwargs.get("drop_path_rate", 0.0)) == float(rate):
        return False
    kwargs = {**backbone.timm_kwargs, "drop_path_rate": float(rate)}
    old = backbone.body
    body = timm.create_model(backbone.timm_name, pretrained=False, **kwargs)
    body.load_state_dict(old.state_dict(), strict=True)
    reference = next(old.parameters(), None)
    if reference is not None:
        body.to(device=reference.device)
    body.train(old.training)
    for new_p, old_p in zip(body.parameters(), old.parameters(), strict=True):
        new_p.requires_grad_(old_p.requires_grad)
    backbone.body = body
    backbone.timm_kwargs = kwargs
    return True


class PlateauScale:
    """The ``plateau`` scheduler: torch's ``ReduceLROnPlateau`` (mode min, relative threshold 1e-4) driving a
    factor on the schedule's LR, stepped with a value the task measures after every epoch.

    Why a one-parameter optimizer: ``fit_loop`` sets every group's LR each step from the schedule, so the
    scheduler cannot own the real optimizer's LR; its rule (patience, threshold, cooldown) is torch's own,
    applied to the LR of a stand-in optimizer, which is the factor.
    """

    def __init__(self, factor: float = 0.1, patience: int = 4) -> None:
        self._optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self._optimizer, mode="min", factor=factor, patience=patience)
        self.history: list[tuple[float, float]] = []  # (monitored value, factor after it) per epoch

    @property
    def scale(self) -> float:
        return float(self._optimizer.param_groups[0]["lr"])

    def step(self, value: float) -> None:
        if not math.isfinite(value):
            raise FloatingPointError(f"plateau scheduler: the monitored value is {value}")
        self.scheduler.step(value)
        self.history.append((float(value), self.scale))

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "scale": self.scale, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self._optimizer.param_groups[0]["lr"] = float(state["scale"])
        self.history = [tuple(item) for item in state["history"]]


class BestEpoch:
    """Checkpoint selection by score: after each epoch ``evaluate()`` scores the weights, and the best
    epoch's state of ``modules`` is kept (on the host) and restored at the end.

    Why: the authors keep the best epoch on the reported split for T2I and PAR (and the best val AP for
    pose); a policy a record names must be the one that chose the scored weights.
    """

    def __init__(self, modules: Sequence[nn.Module], evaluate: Callable[[], float], direction: str) -> None:
        self.modules = list(modules)
        self.evaluate = evaluate
        self.sign = 1.0 if direction == "max" else -1.0
        self.best: tuple[int, float, list[dict[str, torch.Tensor]]] | None = None
        self.evaluated = 0
        self.last: tuple[int, float] | None = None  # (epoch, score) of the latest evaluation (fit log)

    def __call__(self, epoch: int) -> None:
        modes = [(m, m.training) for module in self.modules for m in module.modules()]
        score = float(self.evaluate())
        for module, training in modes:  # predict() switched to eval mode; training continues as it was
            module.training = training
        self.evaluated += 1
        self.last = (epoch, score)
        if self.best is None or self.sign * score > self.sign * self.best[1]:
            states = [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
                      for m in self.modules]
            self.best = (epoch, score, states)

    def state_dict(self) -> dict[str, Any]:
        """The selection so far, for a fit checkpoint (a resumed unit selects as if never stopped)."""
        return {"best": self.best, "evaluated": self.evaluated, "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.evaluated, self.last = state["best"], int(state["evaluated"]), state["last"]

    def restore(self) -> dict[str, Any]:
        """Load the best epoch's weights back; returns what a record says about the choice."""
        if self.best is None:
            return {"selected_epoch": None, "epochs_evaluated": 0}
        epoch, score, states = self.best
        for module, state in zip(self.modules, states, strict=True):
            module.load_state_dict(copy.copy(state))
        return {"selected_epoch": epoch + 1, "selected_score": score, "epochs_evaluated": self.evaluated}


def protocol_summary(protocol: Protocol) -> dict[str, Any]:
    """The recipe details a task reports beside its scores (plain values, they land in records)."""
    schedule = protocol.schedule
    return {"drop_path": protocol.drop_path, "final_norm": protocol.final_norm,
            "resize_train": protocol.resize.train, "resize_test": protocol.resize.test,
            "no_decay": list(schedule.groups.no_decay), "bias_lr": schedule.groups.bias_lr}


def progress_bar(description: str, total: int, enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, transient=True, disable=not enabled,
    )


FIT_STATE = "fit_state.pt"  # the resume checkpoint of a unit's fit, in the unit's out_dir
FIT_LOG = "finetune_log.jsonl"  # one JSON line per epoch, in the unit's out_dir
FIT_STATE_FORMAT = 1


def weights_digest(module: nn.Module) -> str:
    """A hash of every tensor of ``module.state_dict()`` (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def rng_states(device: torch.device | str) -> dict[str, Any]:
    """The global generators a step may draw from (dropout, drop path, augmentations in this process)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                              "python": random.getstate()}
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_initialized():  # this device only, never every GPU
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device | str) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    device = torch.device(device)
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


class FitCheckpoint:
    """Checkpoint/resume policy of one unit's fit (issue 19, item 4), built by ``Task.run``.

    Every ``every`` epochs (and after the last) ``fit_loop`` writes ``path`` atomically: the trained
    module(s), optimizer, step, epoch, loss history, the best-epoch selection, the global RNG states and a
    fingerprint of the unit's settings. A rerun of the unit resumes from it and ends with the same weights,
    losses and scores as an uninterrupted run (same seed; per-epoch key draws are replayed, see
    ``epoch_batches``). A checkpoint of other settings is ignored with a message and overwritten. Why:
    a 210-epoch COCO unit killed at epoch 200 started again from 0. Units of one epoch write no checkpoint.
    Every epoch also appends one line to ``log_path`` (epoch, step, loss, lr, val score if the selection
    evaluated it, wall time). ``run_log`` (``--logger``, saip_bench/logsinks.py) gets the same numbers
    per epoch (``epoch/*``, ``val/<metric>``) and per step (``train/loss``, ``train/lr``, samples/s,
    data-wait share) as the loop reads its losses back.
    """

    def __init__(self, path: Path, unit_fingerprint: Callable[[], str], every: int = 1,
                 log_path: Path | None = None, selector: BestEpoch | None = None,
                 run_log: RunLog | None = None, metric: str = "score") -> None:
        if every < 1:
            raise ValueError(f"checkpoint every {every} epochs: must be >= 1")
        self.path = Path(path)
        self.unit_fingerprint = unit_fingerprint
        self.every = every
        self.log_path = Path(log_path) if log_path is not None else None
        self.selector = selector
        self.resumed_from: int | None = None  # epoch the last fit resumed from (None: from scratch)
        self.run_log, self.metric = run_log, metric
        self._mark = time.perf_counter()  # when the last step scalars were logged

    def fingerprint(self, model: nn.Module, description: str, total: int, steps_per_epoch: int) -> str:
        """Unit settings + this loop's shape + the starting weights: equal only for the same run."""
        return stable_hash([self.unit_fingerprint(), description, total, steps_per_epoch,
                            weights_digest(model)])

    def load(self, fingerprint: str) -> dict[str, Any] | None:
        """The saved state if it belongs to this run; a foreign or unreadable one is ignored (a message)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # written atomically, so this is another file or another torch
            log.warning("%s: resume checkpoint unreadable (%s); training from epoch 0", self.path, exc)
            return None
        if not isinstance(state, dict) or state.get("format") != FIT_STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            log.warning("%s: field 'format' is %r, expected %s; resume checkpoint ignored, training from "
                        "epoch 0", self.path, found, FIT_STATE_FORMAT)
            return None
        if state.get("fingerprint") != fingerprint:
            found = state.get("fingerprint")
            log.warning("%s: field 'fingerprint' %r was written by a unit with other settings (this one: "
                        "%r); resume checkpoint ignored, training from epoch 0 (it is overwritten)",
                        self.path, found, fingerprint)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"format": FIT_STATE_FORMAT, **state}, self.path)

    def discard(self) -> None:
        """Drop the resume state once the unit has finished (it holds optimizer moments: 3x the weights)."""
        self.path.unlink(missing_ok=True)

    def start_log(self, first_epoch: int, step: int = 0) -> None:
        """A fresh log, or on resume the lines of the epochs up to ``first_epoch`` (later ones are redone)."""
        self._mark = time.perf_counter()
        if self.run_log is not None:
            self.run_log.start(step)
        if self.log_path is None:
            return
        kept: list[str] = []
        if first_epoch and self.log_path.is_file():
            for line in self.log_path.read_text().splitlines():
                try:
                    if json.loads(line)["epoch"] <= first_epoch:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.log_path, "".join(f"{line}\n" for line in kept))

    def log(self, entry: dict[str, Any]) -> None:
        if self.run_log is not None:
            self.run_log.scalars({"epoch/loss": entry["loss"], "epoch/lr": entry["lr"],
                                  f"val/{self.metric}": entry["val"], "epoch/wall_s": entry["wall_s"]},
                                 entry["step"])
        if self.log_path is None:
            return
        with open(self.log_path, "a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()

    def log_steps(self, first: int, losses: Sequence[float], lr: float, batch: int, waited: float) -> None:
        """Steps ``first+1..`` just read back: each loss, and for the window since the last call the lr,
        samples/s (nominal: steps x the schedule's ``batch``) and the share of wall time spent waiting
        for batches (``waited``: the window's seconds blocked on the loader)."""
        if self.run_log is None:
            return
        for offset, value in enumerate(losses):
            self.run_log.scalars({"train/loss": value}, first + offset + 1)
        now, then = time.perf_counter(), self._mark
        self._mark = now
        wall = max(now - then, 1e-9)
        self.run_log.scalars({"train/lr": lr, "train/samples_per_s": len(losses) * batch / wall,
                              "train/data_wait_share": min(1.0, waited / wall)}, first + len(losses))


def fit_loop(
    parameters_model: nn.Module,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    schedule: Schedule,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    amp: bool = True,
    device: torch.device | str = "cpu",
    description: str = "fit",
    show_progress: bool = True,
    log_every: int = 10,
    on_epoch_end: Callable[[int], None] | None = None,
    checkpoint: FitCheckpoint | None = None,
    plateau: PlateauScale | None = None,
) -> dict[str, Any]:
    """The one supervised loop of all tasks: epochs of ``batches(epoch)``, warm-up + schedule, AMP, clip.

    ``checkpoint`` (``FitCheckpoint``): per-epoch log, resume state every N epochs and resume from it.

    ``on_epoch_end(epoch)`` runs after every epoch that took a step (also the last, partial one of a
    step-capped run): checkpoint selection scores the weights there, and a ``plateau`` schedule's task
    steps ``plateau`` (``PlateauScale``, its factor multiplies the LR; saved in the resume state) there.

    ``loss_fn(batch)`` runs the forward pass and returns the scalar loss. ``schedule.max_steps`` caps
    the total number of optimiser steps (CPU protocols). Losses stay on the device and are read (and
    checked for NaN/inf) every ``log_every`` steps, so a GPU is not stopped by a host sync each step.
    Returns the loss history and the input-pipeline timing: ``data_wait_s`` (time blocked on the next
    batch), ``step_waits`` and ``step_ends`` (per step, seconds since the loop started).

    Under a data-parallel plan (``parallel.current()``, set by ``Task.run``) each optimiser step takes
    ``accumulation`` micro-batches of this rank's share (the batches must come from ``epoch_batches``,
    which shards them); across ranks the gradients are all-reduced by DDP (``parallel.wrap``), each
    micro-step's outcome and mean loss are gathered first (a rank that failed to load or forward stops
    every rank before the all-reduce), and only rank 0 writes the log and the resume state.
    """
    dp = parallel.current()
    accumulation = dp.accumulation if dp is not None else 1
    distributed = dp is not None and dp.distributed
    writer = dp is None or dp.is_writer
    if dp is not None and getattr(batches, "data_parallel", None) is not dp:
        raise UserError(f"{description}: this fit builds its batches by hand, so they cannot be split over "
                        f"ranks or accumulation steps ({dp.world} ranks x {dp.accumulation}); data-parallel "
                        "fine-tuning needs batches from common.epoch_batches")
    show_progress = show_progress and writer
    if (schedule.scheduler == "plateau") != (plateau is not None):
        raise SpecError(f"{description}: scheduler {schedule.scheduler!r} "
                        + ("needs a value measured after every epoch, which this task does not supply "
                           "(supported: attributes)" if plateau is None else "with a plateau monitor"))
    epochs = max(1, math.ceil(schedule.epochs))
    total = epochs * max(1, steps_per_epoch)
    if schedule.max_steps:
        total = min(total, schedule.max_steps)
    warmup = warmup_steps(schedule, steps_per_epoch)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    step_waits: list[float] = []
    step_ends: list[float] = []
    step = 0
    first_epoch = 0
    started = time.perf_counter()
    # resume state only where the loop runs more than one epoch (CPU protocols of a few steps pay nothing)
    active = checkpoint is not None and total > max(1, steps_per_epoch)
    fingerprint = ""
    if checkpoint is not None and active:
        fingerprint = checkpoint.fingerprint(parameters_model, description, total, steps_per_epoch)
        saved = checkpoint.load(fingerprint)
        if saved is not None:
            parameters_model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if checkpoint.selector is not None and saved.get("selector") is not None:
                checkpoint.selector.load_state_dict(saved["selector"])
            if plateau is not None and saved.get("plateau") is not None:
                plateau.load_state_dict(saved["plateau"])
            first_epoch, step = int(saved["epoch"]), int(saved["step"])
            losses = list(saved["losses"])
            step_waits, step_ends = list(saved["step_waits"]), list(saved["step_ends"])
            started -= float(saved["elapsed"])
            if not getattr(batches, "replays_skipped_epochs", False):
                for skipped in range(first_epoch):  # advance any generator the batches draw from
                    for _ in batches(skipped):
                        pass
            # each rank its own generators (a data-parallel unit saved every rank's; older files rank 0's)
            rank_states = saved.get("rng_ranks") or [saved["rng"]]
            rank = dp.rank if dp is not None else 0
            set_rng_states(rank_states[rank] if rank < len(rank_states) else saved["rng"], device)
            checkpoint.resumed_from = first_epoch
            if writer:
                log.info("%s: resuming from epoch %d (step %d) of %s", description, first_epoch, step,
                         checkpoint.path)
        parallel.same_on_every_rank(first_epoch, f"{description}: the resume epoch read from "
                                    f"{checkpoint.path}", dp)
    if checkpoint is not None and writer:
        checkpoint.start_log(first_epoch, step)
    forward: Callable[[Any], torch.Tensor] = loss_fn
    if distributed:
        assert dp is not None
        forward = parallel.wrap(parameters_model, loss_fn, device, dp)

    def saves(epoch: int) -> bool:
        """Whether the resume state is written after ``epoch`` (the same answer on every rank)."""
        return active and checkpoint is not None and ((epoch + 1) % checkpoint.every == 0 or step >= total)

    def epoch_done(epoch: int, epoch_start: int, rank_states: list[Any] | None) -> None:
        """Log the epoch; write the resume state every ``checkpoint.every`` epochs and after the last."""
        if checkpoint is None or not writer:
            return
        selector = checkpoint.selector
        last = selector.last if selector is not None else None
        val = last[1] if last is not None and last[0] == epoch else None
        epoch_losses = losses[epoch_start:step]
        checkpoint.log({"epoch": epoch + 1, "step": step, "loss": float(np.mean(epoch_losses)) if epoch_losses
                        else None, "lr": optimizer.param_groups[0]["lr"], "val": val,
                        "wall_s": round(time.perf_counter() - started, 3)})
        if saves(epoch):
            checkpoint.save({
                "fingerprint": fingerprint, "epoch": epoch + 1, "step": step, "losses": losses,
                "step_waits": step_waits, "step_ends": step_ends, "elapsed": time.perf_counter() - started,
                "model": parameters_model.state_dict(), "optimizer": optimizer.state_dict(),
                "selector": selector.state_dict() if selector is not None else None,
                "plateau": plateau.state_dict() if plateau is not None else None,
                "rng": rng_states(device),
                **({"rng_ranks": rank_states} if rank_states is not None else {}),
            })

    def micro_steps(iterator: Iterator[Any], waited: float) -> torch.Tensor | None:
        """Forward and backward of one optimiser step's ``accumulation`` micro-batches; returns the
        step's loss (mean over micro-batches and ranks), None when the epoch's batches ran out."""
        step_loss: torch.Tensor | None = None
        for micro in range(accumulation):
            last = micro == accumulation - 1
            # DDP all-reduces on the last micro-batch's backward only (accumulated gradients before it)
            sync = forward.no_sync() if distributed and not last else contextlib.nullcontext()  # type: ignore[attr-defined]
            with sync:
                loss: torch.Tensor | None = None
                error: Exception | None = None
                try:
                    batch = next(iterator, _END)  # the same on every rank: keys are drawn alike
                    if batch is _END:
                        return None
                    if micro == 0:
                        step_waits.append(time.perf_counter() - waited)
                    with autocast(device, enabled=amp):
                        loss = forward(batch)
                except Exception as exc:
                    if not distributed:
                        raise
                    error = exc
                if distributed:
                    assert dp is not None
                    logged = parallel.step_outcome(error is not None, loss, dp, description, step, device)
                    if error is not None:
                        raise error
                assert loss is not None
                (loss / accumulation if accumulation > 1 else loss).backward()
                if not distributed:
                    logged = loss.detach()
            logged = logged / accumulation if accumulation > 1 else logged
            step_loss = logged if step_loss is None else step_loss + logged
        return step_loss

    def drain(progress: Progress, task: Any) -> None:
        if not pending:
            return
        values = torch.stack(pending).float().cpu().tolist()
        pending.clear()
        first = len(losses)
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{description}: non-finite loss at step {len(losses) + offset} (read every {log_every})"
                )
        losses.extend(values)
        if checkpoint is not None and writer:  # the --logger sinks (logsinks.py)
            checkpoint.log_steps(first, values, optimizer.param_groups[0]["lr"], schedule.batch_size,
                                 sum(step_waits[first:first + len(values)]))
        progress.update(task, completed=len(losses), info=f"loss {losses[-1]:.4f}")

    with progress_bar(description, total, show_progress) as progress:
        task = progress.add_task(description, total=total, info="")
        progress.update(task, completed=len(losses))
        for epoch in range(first_epoch, epochs):
            if step >= total:  # resumed after the last epoch (killed while predicting)
                break
            iterator = iter(batches(epoch))
            epoch_start = step
            while step < total:
                waited = time.perf_counter()
                factor = lr_factor(step, total, warmup, schedule, steps_per_epoch)
                if plateau is not None:
                    factor *= plateau.scale
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
                optimizer.zero_grad(set_to_none=True)
                step_loss = micro_steps(iterator, waited)
                if step_loss is None:  # the epoch ran out (before or within an accumulation)
                    break
                if schedule.grad_clip:
                    torch.nn.utils.clip_grad_norm_(parameters_model.parameters(), schedule.grad_clip)
                optimizer.step()
                pending.append(step_loss)
                step += 1
                if step % log_every == 0 or step == total:
                    drain(progress, task)
                step_ends.append(time.perf_counter() - started)
            if on_epoch_end is not None and step > epoch_start:
                drain(progress, task)
                parallel.sync_buffers(parameters_model, dp)
                on_epoch_end(epoch)
            if checkpoint is not None and step > epoch_start:
                drain(progress, task)
                # every rank's generators, so a resumed data-parallel unit draws as if never stopped
                states = parallel.gather_objects(rng_states(device), dp) if distributed and saves(epoch) \
                    else None
                parallel.agreed(lambda e=epoch, s=epoch_start, r=states: epoch_done(e, s, r),
                                f"{description}: writing the log and resume state of epoch {epoch + 1}", dp)
            if step >= total:
                break
        drain(progress, task)
    parallel.sync_buffers(parameters_model, dp)
    return {"steps": step, "losses": losses, "fit_seconds": time.perf_counter() - started,
            "data_wait_s": float(sum(step_waits)), "step_waits": step_waits, "step_ends": step_ends}


_END = object()


def finetune(
    backbone: Backbone,
    head: nn.Module,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any], torch.Tensor],
    schedule: Schedule,
    steps_per_epoch: int,
    amp: bool,
    device: torch.device | str,
    description: str,
    show_progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
    checkpoint: FitCheckpoint | None = None,
    plateau: PlateauScale | None = None,
) -> dict[str, Any]:
    """Full fine-tuning: backbone and head trained together by ``fit_loop``, with the schedule's groups
    (decay exemptions, LR multipliers, layer-wise decay)."""
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    groups = schedule_param_groups(backbone, head, schedule)
    return fit_loop(model, batches, step, schedule, build_optimizer(groups, schedule), steps_per_epoch,
                    amp=amp, device=device, description=description, show_progress=show_progress,
                    on_epoch_end=on_epoch_end, checkpoint=checkpoint, plateau=plateau)


def fit_unit(ctx: Any, model: nn.Module, groups: list[dict[str, Any]],
             batches: Callable[[int], Iterable[Any]], loss_fn: Callable[[Any], torch.Tensor],
             schedule: Schedule, steps_per_epoch: int) -> dict[str, Any]:
    """``fit_loop`` as the dense and detection tasks run it: an optimizer over ``groups``, the unit's AMP,
    device, progress and resume state, and the unit's name in logs."""
    return fit_loop(model, batches, loss_fn, schedule, build_optimizer(groups, schedule), steps_per_epoch,
                    ctx.amp, ctx.device, description=f"{ctx.spec.key} {ctx.protocol}",
                    show_progress=ctx.show_progress, checkpoint=ctx.fit_checkpoint)


def fit_summary(history: dict[str, Any]) -> dict[str, Any]:
    """What a task reports about its training run (the loss history itself stays out of records)."""
    losses = history["losses"]
    timing = {key: history[key] for key in ("data_wait_s", "step_waits", "step_ends") if key in history}
    return {"steps": history["steps"], "final_loss": losses[-1] if losses else None,
            "fit_seconds": history["fit_seconds"], **timing}


class KeyedDataset(torch.utils.data.Dataset):
    """Samples by arbitrary keys ((index, epoch), (index, mirror), ...): the sampler in the main process
    makes every random draw, so a batch does not depend on how many workers build it."""

    def __init__(self, load: Callable[[Any], Any]) -> None:
        self.load = load

    def __getitem__(self, key: Any) -> Any:
        return self.load(key)


def worker_batches(
    load: Callable[[Any], Any],
    key_batches: Iterable[list[Any]],
    collate: Callable[[list[Any]], Any],
    num_workers: int,
    device: torch.device | str,
    move: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[Any]:
    """``collate([load(key) ...])`` per batch of keys, built by DataLoader workers (pinned, prefetched) and
    moved to ``device`` (``move=False``: left in pinned host memory for the step to move). Why: decoding,
    cropping and target building in the training process left a GPU idle for most of each dense fine-tune
    step (gpu_check on an H200: 82-99 % data wait)."""
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(
        KeyedDataset(load), batch_sampler=key_batches, collate_fn=collate, num_workers=num_workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if num_workers else None, generator=generator,
    )
    for batch in loader:
        yield to_device(batch, device) if move else batch


def epoch_batches(
    load: Callable[[Any], Any],
    epoch_keys: Callable[[int], Iterable[list[Any]]],
    steps_per_epoch: int,
    collate: Callable[[list[Any]], Any],
    num_workers: int,
    device: torch.device | str,
    move: bool = True,
) -> Callable[[int], Iterator[Any]]:
    """``batches(epoch)`` for ``fit_loop`` from ONE loader whose workers live across epochs.

    ``epoch_keys(e)`` gives epoch e's ``steps_per_epoch`` key batches (its shuffle and flips, drawn in
    the main process in the same order as a single process would; under a data-parallel plan each key
    batch becomes this rank's micro-batches, ``DataParallel.micro_batches``). Why one loader: a dataset of few
    batches per epoch (a batch of 512 pose crops) otherwise restarts its workers every epoch and has a
    single worker build the one batch in flight, so extra workers bought nothing (gpu_check, H200).
    """
    state: dict[str, Iterator[Any]] = {}
    dp = parallel.current()
    if dp is not None:  # data-parallel: this rank's micro-batches of every global key batch (same draws)
        draw_keys = epoch_keys

        def epoch_keys(epoch: int) -> Iterator[list[Any]]:
            for keys in draw_keys(epoch):
                yield from dp.micro_batches(list(keys))

        steps_per_epoch *= dp.accumulation
    # the loader's base seed, drawn now from the global generator rather than when its iterator starts:
    # a resumed fit restores the global RNG state before its first batch, and must find it where an
    # uninterrupted run had it (the draw sequence of a fresh run is unchanged)
    loader_generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))

    def every_epoch(first: int) -> Iterator[list[Any]]:
        for skipped in range(first):  # a resumed fit: replay the skipped epochs' key draws (no images)
            for _ in epoch_keys(skipped):
                pass
        for epoch in itertools.count(first):
            yield from epoch_keys(epoch)

    def batches(epoch: int) -> Iterator[Any]:
        if "it" not in state:
            state["it"] = worker_batches(load, every_epoch(epoch), collate, num_workers, device, move,
                                         generator=loader_generator)
        return itertools.islice(state["it"], steps_per_epoch)

    batches.replays_skipped_epochs = True  # type: ignore[attr-defined]  # fit_loop need not replay them
    batches.data_parallel = dp  # type: ignore[attr-defined]  # fit_loop checks the batches are sharded
    return batches


@torch.no_grad()
def extract(
    fn: Callable[[Any], dict[str, torch.Tensor]],
    batches: Iterable[Any],
    amp: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Run ``fn`` over batches (no grad, bf16 autocast) and concatenate each output key (as float32)."""
    outputs: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        with autocast(device, enabled=amp):
            result = fn(batch)
        for key, value in result.items():
            outputs.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values) for key, values in outputs.items()}


def sharded_extract(
    fn: Callable[[Any], dict[str, torch.Tensor]],
    paths: Sequence[str],
    size: tuple[int, int],
    ctx: Any,
    batch_size: int = 64,
    interpolation: str = "bilinear",
) -> dict[str, torch.Tensor]:
    """``extract(fn, image_loader(paths, ...))`` in order; under a data-parallel plan each rank extracts
    its contiguous share and the shares are gathered (every rank gets every row, in the order of
    ``paths``), so the predictions and their score equal a single process's on the same weights."""
    dp = parallel.current()
    if dp is None or not dp.distributed:
        loader = image_loader(paths, size, batch_size, ctx.num_workers, interpolation=interpolation)
        return extract(fn, loader, amp=ctx.amp, device=ctx.device)
    start, stop = dp.shard_range(len(paths))

    def local() -> dict[str, torch.Tensor]:
        if start == stop:
            return {}
        loader = image_loader(paths[start:stop], size, batch_size, ctx.num_workers,
                              interpolation=interpolation)
        return extract(fn, loader, amp=ctx.amp, device=ctx.device)

    mine = parallel.agreed(local, f"feature extraction of {len(paths)} images", dp)
    return parallel.gather_rows(mine, dp)


def cached(path: Path, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Frozen-protocol feature cache: compute once, save atomically, reuse (keyed by the caller's path)."""
    if path.exists():
        return torch.load(path, weights_only=True)
    result = compute()
    atomic_torch_save(result, path)
    return result


def limit(records: Sequence[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded subset of ``n`` records (all when ``n`` is None), in the original order."""
    if n is None or n >= len(records):
        return list(records)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(records), size=n, replace=False))
    return [records[int(i)] for i in keep]


def n_samples(original: int, effective: int) -> dict[str, int]:
    return {"original": int(original), "effective": int(effective)}


# --- single-person tasks (reid, t2i_retrieval, attributes) share these -------------------------------


def split_records(data: Any, expression: str) -> list[dict[str, Any]]:
    """Records of a spec split expression: ``"test"`` or a concatenation such as ``"train+val"``.

    Why: protocols train on unions of official splits (TransReID's MSMT17 train+val, Rethinking-of-PAR's
    trainval) and the spec names them as data, not code.
    """
    from saip_bench.errors import UserError

    records: list[dict[str, Any]] = []
    for name in expression.split("+"):
        name = name.strip()
        if name not in data.splits:
            raise UserError(
                f"dataset {data.name!r} has no split {name!r} (spec asks for {expression!r}); "
                f"splits: {', '.join(sorted(data.splits))}"
            )
        records.extend(data.splits[name])
    return records


class ImageDataset(torch.utils.data.Dataset):
    """Images of ``paths`` resized to ``size`` (H, W) as uint8 tensors, with their index. The step makes
    them float on the device (``unit_images``) and normalises them there."""

    def __init__(self, paths: Sequence[str], size: tuple[int, int], interpolation: str = "bilinear") -> None:
        self.paths = list(paths)
        self.size = (int(size[0]), int(size[1]))
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return pil_to_uint8(load_rgb(self.paths[index]), self.size, self.interpolation), index


class Augmentation(NamedTuple):
    """A single-person fine-tune's train augmentation, split by where it runs. ``pixels`` (flip, pad,
    crop: moves and copies of pixels) runs in the loader worker on the uint8 image, with the same draws
    and values as on floats. ``erasing`` (torchvision's ``v2.RandomErasing`` with a constant fill) is only
    drawn there (``erasing_box``) and painted in the step (``unit_images``). Why: the loader then carries
    uint8 images, a quarter of the bytes of floats, and the numbers stay those of erasing the floats."""

    pixels: Callable[[torch.Tensor], torch.Tensor] | None
    erasing: Any = None


def erasing_box(erasing: Any, image: torch.Tensor) -> tuple[int, int, int, int]:
    """The box (top, left, height, width) that ``erasing(image)`` would paint, (0, 0, 0, 0) for none,
    drawn with exactly its random calls (torchvision's ``RandomErasing.forward``: one coin against ``p``,
    then ``make_params``), so the same seed erases the same pixels. A constant fill only: a random fill is
    drawn per pixel, which a box cannot carry."""
    if erasing.value is None:
        raise ValueError("erasing_box: RandomErasing with value=None (a random fill) cannot be deferred")
    if torch.rand(1) >= erasing.p:
        return (0, 0, 0, 0)
    # ``make_params`` since torchvision 0.21, ``_get_params`` before (pyproject allows >= 0.19)
    params = (getattr(erasing, "make_params", None) or erasing._get_params)([image])
    if params["v"] is None:  # no box fitted in ten tries: torchvision leaves the image alone
        return (0, 0, 0, 0)
    return (int(params["i"]), int(params["j"]), int(params["h"]), int(params["w"]))


def unit_images(
    images: torch.Tensor,
    device: torch.device | str,
    boxes: torch.Tensor | None = None,
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """A loader's uint8 images -> float [0, 1] on ``device`` (a queued copy when pinned), with each
    image's erasing box (``erasing_box``; height 0 = none) painted in ``fill``: the same numbers as
    torchvision's erasing of the float image, without a host sync or a per-image launch."""
    images = unit_float(images.to(device, non_blocking=True))
    if boxes is None:
        return images
    if fill is None:
        raise ValueError("unit_images: erasing boxes need their fill")
    top, left, height, width = host_to_device(boxes, images.device).unbind(1)
    rows = torch.arange(images.shape[-2], device=images.device).view(1, -1, 1)
    cols = torch.arange(images.shape[-1], device=images.device).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + height).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + width).view(-1, 1, 1)))
    return torch.where(inside.unsqueeze(1), constant(tuple(fill), images.device).view(1, -1, 1, 1), images)


def augmented_images(batch: Any, augmentation: Augmentation | None, device: torch.device | str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(float [0, 1] images on ``device``, erased as drawn; host indices) of an ``image_epoch_batches``
    batch."""
    images, index, boxes = batch
    erasing = augmentation.erasing if augmentation is not None else None
    if erasing is None:
        return unit_images(images, device), index
    return unit_images(images, device, boxes, erasing.value), index


def image_loader(
    paths: Sequence[str],
    size: tuple[int, int],
    batch_size: int,
    num_workers: int = 0,
    interpolation: str = "bilinear",
) -> torch.utils.data.DataLoader:
    """A DataLoader of (uint8 images, indices) in order (evaluation and feature extraction)."""
    return torch.utils.data.DataLoader(ImageDataset(paths, size, interpolation), batch_size=batch_size,
                                       num_workers=num_workers)


def image_epoch_batches(
    paths: Sequence[str],
    size: tuple[int, int],
    augmentation: Augmentation | None,
    epoch_indices: Callable[[int], Iterable[list[int]]],
    steps_per_epoch: int,
    num_workers: int,
    device: torch.device | str,
    interpolation: str = "bilinear",
) -> Callable[[int], Iterator[Any]]:
    """Fine-tune batches (uint8 images, indices, erasing boxes (B, 4)) for ``fit_loop`` from one loader
    whose workers live across epochs (``epoch_batches``), left in (pinned) host memory: the step moves
    them (``unit_images``); the indices stay on the host, where the label tables they index live."""
    dataset = ImageDataset(paths, size, interpolation)

    def sample(index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image, _ = dataset[index]
        box = (0, 0, 0, 0)
        if augmentation is not None:
            if augmentation.pixels is not None:
                image = augmentation.pixels(image)
            if augmentation.erasing is not None:
                box = erasing_box(augmentation.erasing, image)
        return image, index, torch.tensor(box, dtype=torch.int64)

    return epoch_batches(sample, epoch_indices, steps_per_epoch, torch.utils.data.default_collate,
                         num_workers, device, move=False)


def frozen_features(
    ctx: Any,
    records: Sequence[dict[str, Any]],
    size: tuple[int, int],
    what: str,
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    batch_size: int = 32,
    interpolation: str = "bilinear",
) -> dict[str, torch.Tensor]:
    """``fn(normalised images)`` over ``records`` in order (eval mode, no augmentation), cached under
    ``ctx.cache_dir`` keyed by dataset, image paths, input size, ``what`` and AMP (so every unit of one
    checkpoint that needs the same features extracts them once)."""
    from saip_bench.specs import stable_hash

    paths = [record["path"] for record in records]

    def compute() -> dict[str, torch.Tensor]:
        device = torch.device(ctx.device)
        loader = image_loader(paths, size, batch_size, ctx.num_workers, interpolation=interpolation)
        return extract(
            lambda batch: fn(normalize(unit_images(batch[0], device))), loader, amp=ctx.amp, device=device
        )

    if ctx.cache_dir is None:
        return compute()
    key = stable_hash(
        {"dataset": ctx.data.name, "version": ctx.data.version, "paths": paths, "size": list(size),
         "what": what, "amp": bool(ctx.amp),
         # only a non-default rule joins the key, so caches written before resize rules stay valid
         **({"interpolation": interpolation} if interpolation != "bilinear" else {})}
    )
    return cached(Path(ctx.cache_dir) / f"{ctx.data.name}-{what}-{key}.pt", compute)
