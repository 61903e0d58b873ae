"""Training plumbing shared by the detection-style tasks (CrowdHuman, Fashionpedia).

Why: both train torchvision detectors on the backbone's pyramid, with the same records per role, the same
fit set-up (what trains, batch count, seeded shuffles), mirrored fine-tune batches, frozen-protocol cache of
pyramid maps and batches drawn from it, and the same fit record (``n_samples``); one copy keeps their
behaviour (and cache keys) equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from saip_bench.devices import unit_float
from saip_bench.specs import Schedule, stable_hash
from saip_bench.tasks.base import Task, UnitContext
from saip_bench.tasks.common import (
    cached,
    epoch_batches,
    extract,
    fit_unit,
    is_frozen,
    limit,
    load_rgb,
    n_samples,
    normalize,
    pil_to_uint8,
    schedule_param_groups,
    set_backbone_trainable,
)
from saip_bench.tasks.dense.features import backbone_fingerprint, multi_level

Sample = tuple[torch.Tensor, Any]


def mirrored_batches(
    records: list[dict[str, Any]],
    load: Callable[[dict[str, Any]], Sample],
    flip: Callable[[Any, int], Any],
    width: int,
    batch_size: int,
    steps_per_epoch: int,
    generator: torch.Generator,
    device: torch.device,
    num_workers: int = 0,
    collate: Callable[[list[Sample]], tuple[Any, ...]] | None = None,
) -> Callable[[int], Iterator[tuple[Any, ...]]]:
    """Fine-tune batches: a fresh shuffle each epoch, each image mirrored with p = 0.5 (its target too).

    ``collate`` (default: stack same-size images into (images, targets)) lets images of different sizes
    (aspect-preserving resizes) be padded into one batch (``resize.padded_collate``: + each image's size);
    ``flip`` then gets ``width`` but may use the target's own size.
    """

    def sample(key: tuple[int, bool]) -> Sample:
        image, target = load(records[key[0]])
        return (image.flip(-1), flip(target, width)) if key[1] else (image, target)

    def stack(samples: list[Sample]) -> tuple[torch.Tensor, list[Any]]:
        return torch.stack([s[0] for s in samples]), [s[1] for s in samples]

    def epoch_keys(epoch: int) -> Iterator[list[tuple[int, bool]]]:
        order = torch.randperm(len(records), generator=generator)
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            index = order[start:start + batch_size]
            mirror = (torch.rand(len(index), generator=generator) < 0.5).tolist()
            yield [(int(i), bool(m)) for i, m in zip(index, mirror, strict=True)]

    return epoch_batches(sample, epoch_keys, steps_per_epoch, collate or stack, num_workers, device)


def cached_level_maps(
    ctx: UnitContext, size: tuple[int, int], levels: Any, records: list[dict[str, Any]], prefix: str,
    load: Callable[[dict[str, Any]], torch.Tensor] | None = None, layout: str | None = None,
) -> list[torch.Tensor]:
    """Frozen-protocol pyramid maps of ``records`` at ``size``, cached under ``ctx.cache_dir``.

    The key includes the backbone's weight fingerprint, so a cache folder shared by mistake across
    checkpoints never hands one backbone's features to another. ``load`` (default: the whole image
    resized to ``size``) gives a record's (3, *size) image another way (an aspect-kept resize padded to
    ``size``); ``layout`` names that way in the key. Images are uint8, made float on the device.
    """
    load = load or (lambda record: pil_to_uint8(load_rgb(record["path"]), size))

    def compute() -> dict[str, torch.Tensor]:
        ctx.backbone.eval()

        def loader() -> Iterator[torch.Tensor]:
            for start in range(0, len(records), 16):
                chunk = records[start:start + 16]
                yield torch.stack([load(r) for r in chunk])

        def fn(images: torch.Tensor) -> dict[str, torch.Tensor]:
            maps = multi_level(ctx.backbone, normalize(unit_float(images.to(ctx.device))), levels)
            return {f"level{i}": m for i, m in enumerate(maps)}

        return extract(fn, loader(), ctx.amp, ctx.device)

    keyed = {"task": ctx.spec.key, "size": list(size), "levels": levels,
             "backbone": backbone_fingerprint(ctx.backbone), "ids": [r["path"] for r in records]}
    if layout is not None:  # absent for the default layout: existing cache keys stay valid
        keyed["layout"] = layout
    key = stable_hash(keyed)
    result = cached(ctx.cache_dir / f"{prefix}-{key}.pt", compute) if ctx.cache_dir else compute()
    return [result[f"level{i}"] for i in range(len(levels))]


@dataclass(frozen=True)
class FitPlan:
    """What a detection fit trains and in what steps: ``frozen`` (the head alone on cached maps) or the
    backbone too, batches of ``batch_size`` (at most the record count), shuffles drawn from ``generator``."""

    frozen: bool
    schedule: Schedule
    batch_size: int
    steps_per_epoch: int
    generator: torch.Generator


def plan_fit(ctx: UnitContext, head: nn.Module, count: int) -> FitPlan:
    """Set the backbone trainable (or not) for the protocol, the head on the device in training mode, and
    the batch count of ``count`` training records; the shuffles' generator is seeded from the unit."""
    frozen = is_frozen(ctx.protocol_spec.kind)
    schedule = ctx.protocol_spec.schedule
    set_backbone_trainable(ctx.backbone, not frozen)
    head.to(ctx.device).train()
    batch_size = min(schedule.batch_size, max(1, count))
    return FitPlan(frozen, schedule, batch_size, max(1, count // batch_size),
                   torch.Generator().manual_seed(ctx.seed))


def cached_map_batches(
    maps: Sequence[torch.Tensor], targets: Sequence[Any], plan: FitPlan, device: torch.device,
    per_epoch: Callable[[list[Any], int], list[Any]] | None = None,
) -> Callable[[int], Iterator[tuple[list[torch.Tensor], list[Any]]]]:
    """Frozen-protocol batches: a fresh shuffle each epoch of the cached pyramid ``maps`` (one row per
    training image) with their ``targets``; ``per_epoch(targets, epoch)`` may adjust a batch's targets."""

    def batches(epoch: int) -> Iterator[tuple[list[torch.Tensor], list[Any]]]:
        order = torch.randperm(len(targets), generator=plan.generator)
        for start in range(0, plan.steps_per_epoch * plan.batch_size, plan.batch_size):
            index = order[start:start + plan.batch_size]
            chosen = [targets[int(i)] for i in index]
            yield [m[index].to(device) for m in maps], per_epoch(chosen, epoch) if per_epoch else chosen

    return batches


class DetectionTask(Task):
    """A task that trains a detector head (frozen protocol) or backbone + head (fine-tune) on records of
    the spec's splits, and records the sample counts of both roles."""

    def run(self, ctx: UnitContext):
        self._protocol = ctx.protocol  # build_head reads the unit's protocol (its head settings)
        return super().run(ctx)

    def _records(self, ctx: UnitContext, role: str) -> tuple[list[dict[str, Any]], int]:
        """The ``role`` split's records within the unit's sample limit, and the split's full count."""
        records = ctx.data.splits[ctx.spec.splits[role]]
        n = ctx.max_train_samples if role == "train" else ctx.max_eval_samples
        return limit(records, n, ctx.seed), len(records)

    def _fit_and_count(
        self, ctx: UnitContext, head: nn.Module, plan: FitPlan, batches: Callable[[int], Iterator[Any]],
        loss_fn: Callable[[Any], torch.Tensor], trained: int, original: int,
    ) -> dict[str, Any]:
        """``fit_unit`` on the head (frozen) or backbone + head, then the train / eval ``n_samples``
        (``trained`` of ``original`` training records)."""
        if plan.frozen:
            model: nn.Module = head
            groups = schedule_param_groups(None, head, plan.schedule)
        else:
            model = nn.ModuleDict({"backbone": ctx.backbone, "head": head})
            groups = schedule_param_groups(ctx.backbone, head, plan.schedule)
        info = fit_unit(ctx, model, groups, batches, loss_fn, plan.schedule, plan.steps_per_epoch)
        eval_records, eval_original = self._records(ctx, "eval")
        info["n_samples"] = {"train": n_samples(original, trained),
                             "eval": n_samples(eval_original, len(eval_records))}
        return info
