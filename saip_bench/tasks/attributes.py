"""Pedestrian attribute recognition (PA-100K, PETAzs) in the Rethinking-of-PAR style.

Head: one linear classifier on average-pooled backbone features (mean of the patch tokens / feature
map), trained with Rethinking-of-PAR's weighted BCE: per attribute, positives weigh exp(1 - r) and
negatives exp(r), r = the attribute's positive ratio in the training labels; summed over attributes,
averaged over samples. Only the dataset's evaluated attributes (``meta['eval_idx']``: PA-100K all 26,
PETA 35, PETAzs all stored) are trained and predicted.

Protocols: ``finetune`` (Rethinking's schedule: ReduceLROnPlateau, factor 0.1, patience 4, stepped with
the test-split loss after every epoch, ``common.PlateauScale``) and ``linear`` (frozen backbone, cached
pooled features; ``feature_norm: true`` puts MAE's parameter-free BatchNorm before the classifier).

Predictions: ``predictions/attributes.npz`` with ``probs`` (sigmoid, N x A) and ``labels`` (N x A) over
the evaluated attributes, plus ``attribute_names`` and ``attribute_idx`` (their columns in the dataset),
as ``saip-bench metric attributes`` reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import host_to_device
from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics.attributes import THRESHOLD, evaluate_attributes_file
from saip_bench.specs import TaskSpec
from saip_bench.tasks import common
from saip_bench.tasks.base import TASKS, UnitContext
from saip_bench.tasks.reid import SinglePersonTask, input_size


def eval_columns(data: DatasetSplits) -> list[int]:
    """The evaluated attribute columns (reader's ``eval_idx``; all when absent)."""
    records = next((r for r in data.splits.values() if r), None)
    if records is None:
        raise UserError(f"{data.name}: no records in any split")
    width = len(records[0]["labels"])
    idx = data.meta.get("eval_idx")
    idx = list(range(width)) if idx is None else [int(i) for i in idx]
    if not idx or min(idx) < 0 or max(idx) >= width:
        raise DataFormatError(data.root, f"eval_idx within the {width} stored attributes", str(idx[:10]))
    return idx


def label_matrix(records: list[dict[str, Any]], columns: list[int]) -> torch.Tensor:
    return torch.tensor([record["labels"] for record in records], dtype=torch.float32)[:, columns]


def positive_ratio(labels: torch.Tensor) -> torch.Tensor:
    """Per-attribute share of positives in the training labels (Rethinking's ``weight_train``)."""
    return labels.mean(0)


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Rethinking-of-PAR's sample-weighted BCE: positives exp(1 - r), negatives exp(r)."""
    weights = torch.where(targets > 0.5, torch.exp(1.0 - ratio), torch.exp(ratio))
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (loss * weights).sum(1).mean()


def pooled(backbone: Backbone, images: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """The head's input: ``avg`` = mean over patch tokens (ViT) / feature-map positions; ``cls`` = the
    CLS token after the final norm (Rethinking-of-PAR's ViT head; pooled feature for non-ViTs)."""
    features = backbone.forward_features(images)
    return features["cls"] if pool == "cls" else features["tokens"].mean(1)


def pool_kind(params: dict[str, Any]) -> str:
    """The protocol's ``pool`` param (``avg`` or ``cls``); anything else is a spec error."""
    pool = str(params.get("pool", "avg"))
    if pool not in ("avg", "cls"):
        raise UserError(f"attributes: params.pool must be 'avg' or 'cls', not {pool!r}")
    return pool


def attribute_augmentation(size: tuple[int, int]) -> common.Augmentation:
    """Rethinking-of-PAR's train transform: pad 10 + random crop, flip (no erasing)."""
    from torchvision.transforms import v2

    return common.Augmentation(v2.Compose([v2.Pad(10), v2.RandomCrop(size), v2.RandomHorizontalFlip(0.5)]))


def attribute_card(
    image_path: str, names: list[str], probs: np.ndarray, labels: np.ndarray, path: Path
) -> None:
    """Image plus its attributes: predicted positives (green if right, red if wrong), misses in grey."""
    image = common.load_rgb(image_path).resize((64, 128))
    lines = []
    for name, prob, label in zip(names, probs, labels, strict=True):
        predicted = prob > THRESHOLD
        if predicted or label:
            colour = "green" if predicted and label else "red" if predicted else "grey"
            lines.append((f"{name} {prob:.2f}", colour))
    canvas = Image.new("RGB", (64 + 220, max(128, 12 * len(lines) + 8)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (text, colour) in enumerate(lines):
        draw.text((70, 4 + 12 * row), text, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


@TASKS.register("attributes")
class AttributesTask(SinglePersonTask):
    name: ClassVar[str] = "attributes"
    datasets: ClassVar[tuple[str, ...]] = ("pa100k", "peta")
    selections: ClassVar[tuple[str, ...]] = ("final", "best_test")

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        classifier = nn.Linear(backbone.num_features, len(eval_columns(data)))
        if not self.params(spec).get("feature_norm"):
            return classifier
        # MAE's linear-probe recipe: a parameter-free BatchNorm standardises the frozen features, so the
        # probe compares what the features carry rather than their scale (which differs per method).
        return nn.Sequential(nn.BatchNorm1d(backbone.num_features, affine=False, eps=1e-6), classifier)

    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        protocol = ctx.protocol_spec
        schedule = protocol.schedule
        size = input_size(ctx.spec, self.params(ctx.spec))
        pool = pool_kind(self.params(ctx.spec))
        columns = eval_columns(ctx.data)
        all_records = common.split_records(ctx.data, ctx.spec.splits["train"])
        if not all_records:
            raise UserError(f"{ctx.data.name}: the train split {ctx.spec.splits['train']!r} is empty")
        records = common.limit(all_records, ctx.max_train_samples, ctx.seed)
        targets = label_matrix(records, columns)
        ratio = positive_ratio(label_matrix(all_records, columns))
        device = torch.device(ctx.device)
        backbone = ctx.backbone.to(device)
        head.to(device).train()
        ratio_d = ratio.to(device)
        targets_on_device = targets.to(device)  # indexed there by each batch's indices (no per-step copy)
        frozen = common.is_frozen(protocol.kind)
        common.set_backbone_trainable(backbone, not frozen)
        batch_size = min(schedule.batch_size, len(records))
        steps_per_epoch = max(1, len(records) // batch_size)
        on_epoch_end, plateau = ctx.epoch_end, None
        if schedule.scheduler == "plateau":  # Rethinking-of-PAR: ReduceLROnPlateau on the test-split loss
            plateau = common.PlateauScale(schedule.plateau_factor, schedule.plateau_patience)
            select = ctx.epoch_end

            def on_epoch_end(epoch: int) -> None:
                if select is not None:
                    select(epoch)
                plateau.step(self.test_loss(ctx, head, ratio))

        def shuffled(epoch: int) -> list[list[int]]:
            generator = torch.Generator().manual_seed(ctx.seed * 1000 + epoch)
            order = torch.randperm(len(records), generator=generator)
            return [
                order[i : i + batch_size].tolist() for i in range(0, steps_per_epoch * batch_size, batch_size)
            ]

        def batch_bce(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            """The loss of the cached features and targets at ``index`` (on the device)."""
            return weighted_bce(head(features[index]), targets_on_device[index], ratio_d)

        if frozen:
            features = common.frozen_features(
                ctx, records, size, f"{pool}pool", lambda x: {"pooled": pooled(backbone, x, pool)},
                interpolation=protocol.resize.test,
            )["pooled"].to(device)
            history = common.fit_loop(
                head,
                shuffled,
                lambda idx: batch_bce(features, host_to_device(torch.tensor(idx), device)),
                schedule,
                common.build_optimizer(common.schedule_param_groups(None, head, schedule), schedule),
                steps_per_epoch,
                amp=ctx.amp,
                device=device,
                description=f"attributes/{ctx.data.name} linear",
                show_progress=ctx.show_progress,
                on_epoch_end=on_epoch_end,
                checkpoint=ctx.fit_checkpoint,
                plateau=plateau,
            )
        else:
            paths = [r["path"] for r in records]
            augmentation = attribute_augmentation(size)

            batches = common.image_epoch_batches(
                paths, size, augmentation, shuffled, steps_per_epoch, ctx.num_workers, device,
                interpolation=protocol.resize.train,
            )

            def step(batch: Any) -> torch.Tensor:
                images, index = common.augmented_images(batch, augmentation, device)  # queued copies
                logits = head(pooled(backbone, common.normalize(images), pool))
                return weighted_bce(logits, targets_on_device[index.to(device, non_blocking=True)], ratio_d)

            history = common.finetune(
                backbone, head, batches, step, schedule, steps_per_epoch, ctx.amp, device,
                f"attributes/{ctx.data.name} finetune", ctx.show_progress, on_epoch_end=on_epoch_end,
                checkpoint=ctx.fit_checkpoint, plateau=plateau,
            )
        plateau_info = ({"plateau": [{"test_loss": v, "lr_factor": f} for v, f in plateau.history]}
                        if plateau is not None else {})
        return {
            **self.protocol_info(ctx),
            **common.fit_summary(history),
            **plateau_info,
            "num_attributes": len(columns),
            "n_samples": {"train": common.n_samples(len(all_records), len(records))},
        }

    @torch.no_grad()
    def test_loss(self, ctx: UnitContext, head: nn.Module, ratio: torch.Tensor) -> float:
        """The training loss (train-split positive ratios) on the test split's logits, for the plateau
        schedule; the modules' train/eval modes are left as they were."""
        modes = [(m, m.training) for module in (ctx.backbone, head) for m in module.modules()]
        try:
            _, records, logits = self._test_logits(ctx, head)
        finally:
            for module, training in modes:
                module.training = training
        targets = label_matrix(records, eval_columns(ctx.data))
        return float(weighted_bce(logits.float(), targets, ratio.float().cpu()))

    def _test_logits(self, ctx: UnitContext, head: nn.Module) -> tuple[list[Any], list[Any], torch.Tensor]:
        """(all test records, the evaluated ones, their logits on the host) with the modules in eval mode."""
        size = input_size(ctx.spec, self.params(ctx.spec))
        pool = pool_kind(self.params(ctx.spec))
        interpolation = ctx.protocol_spec.resize.test
        device = torch.device(ctx.device)
        backbone = ctx.backbone.to(device).eval()
        head.to(device).eval()
        all_records = common.split_records(ctx.data, ctx.spec.splits["test"])
        records = common.limit(all_records, ctx.max_eval_samples, ctx.seed)
        if common.is_frozen(ctx.protocol_spec.kind):
            feats = common.frozen_features(
                ctx, records, size, f"{pool}pool", lambda x: {"pooled": pooled(backbone, x, pool)},
                interpolation=interpolation,
            )["pooled"]
            logits = torch.cat([head(f.to(device)).float().cpu() for f in feats.split(1024)])
        else:
            logits = common.sharded_extract(  # gathered over the ranks of a data-parallel unit
                lambda b: {"logits": head(pooled(backbone, common.normalize(common.unit_images(b[0], device)),
                                                 pool))},
                [r["path"] for r in records], size, ctx, interpolation=interpolation,
            )["logits"]
        return all_records, records, logits.float().cpu()

    @torch.no_grad()
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        columns = eval_columns(ctx.data)
        all_records, records, logits = self._test_logits(ctx, head)
        names = list(
            ctx.data.meta.get("attribute_names") or [f"attr{i}" for i in range(len(records[0]["labels"]))]
        )
        arrays = {
            "probs": torch.sigmoid(logits.float()).numpy(),
            "labels": label_matrix(records, columns).numpy().astype(np.int64),
            "attribute_idx": np.array(columns, dtype=np.int64),
            "attribute_names": np.array([names[i] for i in columns]),
            "image_paths": np.array([r["path"] for r in records]),
        }
        path = ctx.out_dir / "predictions" / "attributes.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        self._n_eval = {"test": common.n_samples(len(all_records), len(records))}
        for index in range(min(ctx.visualize, len(records))):
            attribute_card(
                records[index]["path"],
                list(arrays["attribute_names"]),
                arrays["probs"][index],
                arrays["labels"][index],
                ctx.out_dir / "vis" / f"attributes_{index:03d}.png",
            )
        return [path]

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        return evaluate_attributes_file(predictions[0])
