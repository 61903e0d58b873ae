"""Training-data plumbing shared by the detection-style tasks (CrowdHuman, Fashionpedia).

Why: both train torchvision detectors on the backbone's pyramid, with the same mirrored fine-tune batches
and the same frozen-protocol cache of pyramid maps; one copy keeps their behaviour (and cache keys) equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from saip_bench.specs import stable_hash
from saip_bench.tasks.base import UnitContext
from saip_bench.tasks.common import cached, epoch_batches, extract, load_rgb, normalize, pil_to_tensor
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
    collate: Callable[[list[Sample]], tuple[torch.Tensor, list[Any]]] | None = None,
) -> Callable[[int], Iterator[tuple[torch.Tensor, list[Any]]]]:
    """Fine-tune batches: a fresh shuffle each epoch, each image mirrored with p = 0.5 (its target too).

    ``collate`` (default: stack same-size images) lets images of different sizes (aspect-preserving
    resizes) be padded into one batch; ``flip`` then gets ``width`` but may use the target's own size.
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
    ``size``); ``layout`` names that way in the key.
    """
    load = load or (lambda record: pil_to_tensor(load_rgb(record["path"]), size))

    def compute() -> dict[str, torch.Tensor]:
        ctx.backbone.eval()

        def loader() -> Iterator[torch.Tensor]:
            for start in range(0, len(records), 16):
                chunk = records[start:start + 16]
                yield torch.stack([load(r) for r in chunk])

        def fn(images: torch.Tensor) -> dict[str, torch.Tensor]:
            maps = multi_level(ctx.backbone, normalize(images.to(ctx.device)), levels)
            return {f"level{i}": m for i, m in enumerate(maps)}

        return extract(fn, loader(), ctx.amp, ctx.device)

    keyed = {"task": ctx.spec.key, "size": list(size), "levels": levels,
             "backbone": backbone_fingerprint(ctx.backbone), "ids": [r["path"] for r in records]}
    if layout is not None:  # absent for the default layout: existing cache keys stay valid
        keyed["layout"] = layout
    key = stable_hash(keyed)
    result = cached(ctx.cache_dir / f"{prefix}-{key}.pt", compute) if ctx.cache_dir else compute()
    return [result[f"level{i}"] for i in range(len(levels))]
