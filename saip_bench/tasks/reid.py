"""Person ReID (Market-1501, MSMT17): BNNeck head, ID softmax + triplet loss, P x K sampler.

Protocols (data in ``tasks/reid/*.yaml``):
- ``finetune``: TransReID-style full fine-tuning at 256x128 (flip, pad 10 + crop, random erasing),
  cosine schedule with warm-up; test feature = BNNeck "before" (the backbone feature), L2-normalised.
- ``linear``: frozen backbone, cached features; a fast head (linear embedding -> BNNeck -> classifier)
  trained with the same losses on the cached features; test feature = BNNeck "after", L2-normalised.

Predictions: ``predictions/reid.npz`` with ``distmat`` (1 - cosine, smaller = closer) and the pid /
camid arrays, exactly what ``saip-bench metric reid`` reads; very large evaluations (> 5e7 pairs, e.g.
MSMT17) store ``q_feats``/``g_feats`` instead, which the metric scores chunk by chunk.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from torch import nn
from torch.nn import functional as F

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import host_to_device
from saip_bench.errors import UserError
from saip_bench.metrics.reid import evaluate_reid_file
from saip_bench.specs import TaskSpec
from saip_bench.tasks import common
from saip_bench.tasks.base import TASKS, Task, UnitContext, UnitResult

MAX_DISTMAT_PAIRS = 50_000_000
DEFAULT_INSTANCES = 4


class ReidHead(nn.Module):
    """Optional linear embedding -> BNNeck (bias frozen, as in BoT/TransReID) -> bias-free classifier."""

    def __init__(self, in_dim: int, num_classes: int, embed_dim: int | None = None) -> None:
        super().__init__()
        self.embed: nn.Module = nn.Linear(in_dim, embed_dim) if embed_dim else nn.Identity()
        dim = int(embed_dim or in_dim)
        self.bottleneck = nn.BatchNorm1d(dim)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global feature for the triplet loss, logits for the ID loss)."""
        global_feat = self.embed(features)
        return global_feat, self.classifier(self.bottleneck(global_feat))

    def test_feature(self, features: torch.Tensor, neck_feat: str) -> torch.Tensor:
        global_feat = self.embed(features)
        return self.bottleneck(global_feat) if neck_feat == "after" else global_feat


def triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
    """Batch-hard triplet loss on Euclidean distances; ``margin=None`` is the soft-margin form
    (TransReID's "no margin"): softplus(d_hardest_pos - d_hardest_neg)."""
    features = features.float()
    dist = torch.cdist(features, features).clamp(min=1e-12)
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    valid = torch.isfinite(hardest_neg) & torch.isfinite(hardest_pos)
    # the mean over valid anchors as a masked sum, not ``gap[valid].mean()`` behind ``if valid.any()``:
    # the same numbers without a host read and a mask index (each stops a GPU's host every step)
    gap = torch.where(valid, hardest_pos - hardest_neg, 0.0)
    terms = F.softplus(gap) if margin is None else F.relu(gap + margin)
    return (terms * valid).sum() / valid.sum().clamp(min=1)


def collapsed_loss(num_classes: int, margin: float | None) -> float:
    """ID + triplet loss when every feature is the same point: log(classes) + (log 2, or the margin)."""
    return math.log(num_classes) + (math.log(2.0) if margin is None else float(margin))


def pk_batches(labels: np.ndarray, batch_size: int, instances: int, seed: int) -> list[list[int]]:
    """Identity-balanced batches of P identities x K images (torchreid's RandomIdentitySampler rule:
    identities with fewer than K images are sampled with replacement; remainders are dropped)."""
    rng = np.random.default_rng(seed)
    by_id: dict[int, list[int]] = {}
    for index, label in enumerate(labels.tolist()):
        by_id.setdefault(int(label), []).append(index)
    chunks: dict[int, list[list[int]]] = {}
    for label, indices in by_id.items():
        pool = (
            list(rng.choice(indices, size=instances, replace=True)) if len(indices) < instances else indices
        )
        pool = [int(i) for i in rng.permutation(pool)]
        chunks[label] = [pool[i : i + instances] for i in range(0, len(pool) - instances + 1, instances)]
    per_batch = max(1, min(batch_size // instances, len(chunks)))
    batches: list[list[int]] = []
    available = sorted(label for label, c in chunks.items() if c)
    while len(available) >= per_batch:
        chosen = rng.choice(len(available), size=per_batch, replace=False)
        batch: list[int] = []
        for position in sorted(chosen.tolist()):
            batch.extend(chunks[available[position]].pop())
        batches.append(batch)
        available = [label for label in available if chunks[label]]
    return batches


def ranking_strip(
    query: Image.Image | str | None,
    items: list[tuple[str, bool]],
    path: Path,
    caption: str = "",
    size: tuple[int, int] = (128, 64),
) -> None:
    """One PNG: an optional query image (or caption) and ranked images framed green (match) / red."""
    height, width = size
    border = 4
    text_h = 40 if caption else 0
    tiles = ([query] if query is not None else []) + [item for item, _ in items]
    canvas = Image.new("RGB", (len(tiles) * (width + 2 * border + 4), height + 2 * border + text_h), "white")
    draw = ImageDraw.Draw(canvas)
    if caption:
        lines = [caption[i : i + 90] for i in range(0, min(len(caption), 180), 90)]
        draw.text((4, 2), "\n".join(lines), fill="black")
    for column, tile in enumerate(tiles):
        image = common.load_rgb(tile) if isinstance(tile, str) else tile
        image = image.resize((width, height))
        if query is not None and column == 0:
            colour = "blue"
        else:
            colour = "green" if items[column - (query is not None)][1] else "red"
        framed = ImageOps.expand(image, border=border, fill=colour)
        canvas.paste(framed, (column * (width + 2 * border + 4), text_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def relabel(pids: list[int]) -> tuple[np.ndarray, int]:
    """Train pids -> contiguous 0..N-1 (readers keep file pids; the classifier needs labels)."""
    mapping = {pid: label for label, pid in enumerate(sorted(set(pids)))}
    return np.array([mapping[pid] for pid in pids], dtype=np.int64), len(mapping)


def merged_params(spec: TaskSpec, protocol: Any) -> dict[str, Any]:
    """Head params and task params, overridden by the protocol's (its ``head`` mapping overrides head
    params): one flat dict, so a protocol changes only what it names."""
    own = dict(protocol.params) if protocol is not None else {}
    head = own.pop("head", {}) or {}
    return {**spec.head.params, **spec.params, **own, **head}


def input_size(spec: TaskSpec, params: dict[str, Any]) -> tuple[int, int]:
    size = params.get("input_size", spec.input_size)
    return int(size[0]), int(size[1])


def reid_augmentation(size: tuple[int, int]) -> common.Augmentation:
    """TransReID's train transform: flip, pad 10 + random crop, random erasing filled with the mean of
    [0, 1] pixels (painted in the step, ``common.Augmentation``)."""
    from torchvision.transforms import v2

    return common.Augmentation(
        v2.Compose([v2.RandomHorizontalFlip(0.5), v2.Pad(10), v2.RandomCrop(size)]),
        v2.RandomErasing(p=0.5, value=list(common.IMAGENET_MEAN)),
    )


class SinglePersonTask(Task):
    """What the three single-person tasks share: protocol-aware head params, samples bookkeeping."""

    protocol: Any = None
    shards_predict: ClassVar[bool] = True  # features by common.sharded_extract, gathered over ranks

    def run(self, ctx: UnitContext) -> UnitResult:
        """Remember the protocol (``build_head`` has no context), then the generic run; evaluation
        sample counts set by ``predict`` join the training counts."""
        self.protocol = ctx.protocol_spec
        self._n_eval: dict[str, dict[str, int]] = {}
        result = super().run(ctx)
        result.n_samples.update(self._n_eval)
        return result

    def params(self, spec: TaskSpec) -> dict[str, Any]:
        protocol = self.protocol if self.protocol is not None else spec.protocols[spec.default_protocol]
        return merged_params(spec, protocol)

    @staticmethod
    def protocol_info(ctx: UnitContext) -> dict[str, Any]:
        protocol = ctx.protocol_spec
        return {
            "protocol": ctx.protocol,
            "protocol_kind": protocol.kind,
            "schedule": protocol.schedule.model_dump(mode="json"),
        }


@TASKS.register("reid")
class ReidTask(SinglePersonTask):
    name: ClassVar[str] = "reid"
    datasets: ClassVar[tuple[str, ...]] = ("market1501", "msmt17")
    selections: ClassVar[tuple[str, ...]] = ("final", "best_test")

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        records = common.split_records(data, spec.splits["train"])
        if not records:
            raise UserError(f"{data.name}: the train split {spec.splits['train']!r} is empty")
        _, num_classes = relabel([r["pid"] for r in records])
        params = self.params(spec)
        return ReidHead(backbone.num_features, num_classes, params.get("embed_dim"))

    # -- training -------------------------------------------------------------------------------

    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        protocol = ctx.protocol_spec
        params = self.params(ctx.spec)
        schedule = protocol.schedule
        all_records = common.split_records(ctx.data, ctx.spec.splits["train"])
        records = common.limit(all_records, ctx.max_train_samples, ctx.seed)
        labels_np, _ = relabel([r["pid"] for r in all_records])
        label_of = {r["path"]: int(label) for r, label in zip(all_records, labels_np, strict=True)}
        labels = torch.tensor([label_of[r["path"]] for r in records])
        device = torch.device(ctx.device)
        labels_on_device = labels.to(device)  # indexed there by each batch's indices (no per-step copy)
        instances = int(params.get("instances_per_id", DEFAULT_INSTANCES))
        margin = params.get("triplet_margin")
        size = input_size(ctx.spec, params)
        backbone = ctx.backbone.to(device)
        head.to(device)
        frozen = common.is_frozen(protocol.kind)
        common.set_backbone_trainable(backbone, not frozen)

        def losses(features: torch.Tensor, batch_labels: torch.Tensor) -> torch.Tensor:
            global_feat, logits = head(features)
            return F.cross_entropy(logits.float(), batch_labels) + triplet_loss(
                global_feat, batch_labels, margin
            )

        def epoch_batches(epoch: int) -> list[list[int]]:
            return pk_batches(labels.numpy(), schedule.batch_size, instances, ctx.seed * 1000 + epoch)

        steps_per_epoch = max(1, len(epoch_batches(0)))

        def gathered(features: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            """The batch's cached features and labels, gathered on the device by one queued index copy."""
            index = host_to_device(torch.tensor(idx), device)
            return features[index], labels_on_device[index]

        if frozen:
            features = common.frozen_features(
                ctx, records, size, "cls", lambda x: {"cls": backbone.forward_features(x)["cls"]},
                interpolation=protocol.resize.test,
            )["cls"].to(device)
            head.train()
            groups = common.schedule_param_groups(None, head, schedule)
            history = common.fit_loop(
                head,
                epoch_batches,
                lambda idx: losses(*gathered(features, idx)),
                schedule,
                common.build_optimizer(groups, schedule),
                steps_per_epoch,
                amp=ctx.amp,
                device=device,
                description=f"reid/{ctx.data.name} linear",
                show_progress=ctx.show_progress,
                on_epoch_end=ctx.epoch_end,
                checkpoint=ctx.fit_checkpoint,
            )
        else:
            head.train()
            augmentation = reid_augmentation(size)
            paths = [r["path"] for r in records]

            batches = common.image_epoch_batches(
                paths, size, augmentation, epoch_batches, steps_per_epoch, ctx.num_workers, device,
                interpolation=protocol.resize.train,
            )

            def step(batch: Any) -> torch.Tensor:
                images, index = common.augmented_images(batch, augmentation, device)  # queued copies
                cls = backbone.forward_features(common.normalize(images))["cls"]
                return losses(cls, labels_on_device[index.to(device, non_blocking=True)])

            history = common.finetune(
                backbone, head, batches, step, schedule, steps_per_epoch, ctx.amp, device,
                f"reid/{ctx.data.name} finetune", ctx.show_progress, on_epoch_end=ctx.epoch_end,
                checkpoint=ctx.fit_checkpoint,
            )
        return {
            **self.protocol_info(ctx),
            **common.fit_summary(history),
            "num_identities": int(labels.unique().numel()),
            # the loss of features collapsed to one point (ID at chance + triplet at d_ap = d_an): a final
            # loss near it means the fine-tune collapsed rather than learned
            "loss_if_collapsed": collapsed_loss(len(set(labels_np.tolist())), margin),
            "n_samples": {"train": common.n_samples(len(all_records), len(records))},
        }

    # -- evaluation -----------------------------------------------------------------------------

    def _embed(
        self, ctx: UnitContext, head: ReidHead, records: list[dict[str, Any]], split: str
    ) -> torch.Tensor:
        params = self.params(ctx.spec)
        size = input_size(ctx.spec, params)
        neck_feat = params.get("neck_feat", "before")
        device = torch.device(ctx.device)
        backbone = ctx.backbone.to(device).eval()
        head.to(device).eval()
        if common.is_frozen(ctx.protocol_spec.kind):
            cls = common.frozen_features(
                ctx, records, size, "cls", lambda x: {"cls": backbone.forward_features(x)["cls"]},
                interpolation=ctx.protocol_spec.resize.test,
            )["cls"]
            with torch.no_grad():
                feats = torch.cat([head.test_feature(c.to(device), neck_feat) for c in cls.split(1024)])
        else:
            feats = common.sharded_extract(  # gathered over the ranks of a data-parallel unit
                lambda b: {
                    "f": head.test_feature(
                        backbone.forward_features(common.normalize(common.unit_images(b[0], device)))["cls"],
                        neck_feat,
                    )
                },
                [r["path"] for r in records], size, ctx, interpolation=ctx.protocol_spec.resize.test,
            )["f"]
        return F.normalize(feats.float().cpu(), dim=1)

    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        query_all = common.split_records(ctx.data, ctx.spec.splits["query"])
        gallery_all = common.split_records(ctx.data, ctx.spec.splits["gallery"])
        query = common.limit(query_all, ctx.max_eval_samples, ctx.seed)
        gallery = common.limit(gallery_all, ctx.max_eval_samples, ctx.seed + 1)
        q_feats = self._embed(ctx, head, query, "query")
        g_feats = self._embed(ctx, head, gallery, "gallery")
        arrays: dict[str, np.ndarray] = {
            "q_pids": np.array([r["pid"] for r in query], dtype=np.int64),
            "g_pids": np.array([r["pid"] for r in gallery], dtype=np.int64),
            "q_camids": np.array([r["camid"] for r in query], dtype=np.int64),
            "g_camids": np.array([r["camid"] for r in gallery], dtype=np.int64),
            "q_paths": np.array([r["path"] for r in query]),
            "g_paths": np.array([r["path"] for r in gallery]),
        }
        if len(query) * len(gallery) <= MAX_DISTMAT_PAIRS:
            arrays["distmat"] = (1.0 - q_feats @ g_feats.t()).numpy().astype(np.float32)
        else:
            arrays["q_feats"], arrays["g_feats"] = q_feats.numpy(), g_feats.numpy()
        path = ctx.out_dir / "predictions" / "reid.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        self._n_eval = {
            "query": common.n_samples(len(query_all), len(query)),
            "gallery": common.n_samples(len(gallery_all), len(gallery)),
        }
        if ctx.visualize > 0:
            self._visualize(ctx, arrays, q_feats, g_feats)
        return [path]

    def _visualize(
        self, ctx: UnitContext, arrays: dict[str, np.ndarray], q: torch.Tensor, g: torch.Tensor
    ) -> None:
        top = min(5, g.shape[0])
        for index in range(min(ctx.visualize, q.shape[0])):
            order = torch.argsort(1.0 - q[index] @ g.t(), stable=True)
            keep = [
                int(j)
                for j in order
                if not (
                    arrays["g_pids"][j] == arrays["q_pids"][index]
                    and arrays["g_camids"][j] == arrays["q_camids"][index]
                )
            ][:top]
            items = [
                (str(arrays["g_paths"][j]), bool(arrays["g_pids"][j] == arrays["q_pids"][index]))
                for j in keep
            ]
            ranking_strip(
                common.load_rgb(str(arrays["q_paths"][index])),
                items,
                ctx.out_dir / "vis" / f"reid_query_{index:03d}.png",
            )

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        return evaluate_reid_file(predictions[0])
