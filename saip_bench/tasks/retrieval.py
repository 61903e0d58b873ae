"""Text-to-image person retrieval (CUHK-PEDES, ICFG-PEDES) in the spirit of IRRA.

Image side: the benchmarked backbone's tokens -> linear projection (the CLS one is the embedding). Text
side: a pluggable encoder (``saip_bench.tasks.text``). Losses: SDM (similarity-distribution matching: KL
between the softmax of scaled cosine similarities and the normalised same-identity matrix, both
directions) + ID (a shared identity classifier on both sides) + optionally IRRA's cross-modal MLM (masked
caption tokens attend over the image tokens and predict the masked BPE ids).

Protocols (docs/tasks_single_person.md#text-to-image-retrieval):
- ``finetune``: the paper's IRRA recipe. Backbone trained too; CLIP's text tower and BPE tokenizer through
  open_clip, loaded from a local checkpoint file; SDM + MLM + ID; CLIP normalisation; the recipe's Adam
  groups and schedule (all in the spec).
- ``linear``: the labelled CPU protocol (the default). Frozen backbone, cached image features; a small
  text transformer trained from scratch on a word vocabulary of the training captions; SDM + ID.

Predictions: ``predictions/retrieval.npz`` with ``similarity`` (captions x images, cosine),
``text_pids``, ``image_pids`` as ``saip-bench metric retrieval`` reads them (plus captions and image
paths for inspection); the vocabulary is saved as ``predictions/tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import packed_to_device
from saip_bench.errors import UserError
from saip_bench.metrics.retrieval import evaluate_retrieval_file
from saip_bench.specs import TaskSpec
from saip_bench.tasks import common
from saip_bench.tasks.base import TASKS, UnitContext
from saip_bench.tasks.reid import SinglePersonTask, input_size, ranking_strip, relabel
from saip_bench.tasks.text import TextSide, WordTokenizer, build_text_side
from saip_bench.tasks.text.mlm import (
    IGNORE,
    CrossModalMLM,
    MaskingRule,
    mask_tokens,
    mlm_loss,
    target_positions,
)

SDM_EPSILON = 1e-8


class RetrievalHead(nn.Module):
    """Image projection, text encoder (+ projection), shared identity classifier, fixed temperature, and
    IRRA's cross-modal MLM when ``mlm`` is given (it needs a text side with a mask id: open_clip's)."""

    def __init__(
        self,
        image_dim: int,
        text_side: TextSide,
        embed_dim: int,
        num_classes: int,
        temperature: float,
        mlm: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.text_encoder = text_side.encoder
        self.tokenizer = text_side.tokenizer
        self.text_description = text_side.description
        self.image_proj = nn.Linear(image_dim, embed_dim)
        if text_side.projected and text_side.width != embed_dim:
            raise UserError(f"head param embed_dim={embed_dim}: the {text_side.description['type']} text "
                            f"encoder's features are {text_side.width}-d (its own projection); set "
                            f"embed_dim: {text_side.width}")
        # CLIP's text tower ends in its own projection (IRRA adds none); the scratch encoder needs one
        self.text_proj = nn.Identity() if text_side.projected else nn.Linear(text_side.width, embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)
        self.logit_scale = 1.0 / temperature
        self.mlm: CrossModalMLM | None = None
        self.masking = MaskingRule()
        self.mlm_weight = 0.0
        if mlm:
            if text_side.mask_id is None or text_side.vocab_size is None:
                raise UserError(f"head param mlm: masked language modelling needs a BPE text side "
                                f"(text_encoder type open_clip), not {text_side.description['type']!r}")
            settings = dict(mlm)
            self.mlm_weight = float(settings.pop("weight", 1.0))
            self.mask_id = int(text_side.mask_id)
            try:
                self.masking = MaskingRule(**{k: float(settings.pop(k)) for k in ("rate", "mask", "random")
                                              if k in settings})
                depth, heads = int(settings.pop("depth", 4)), settings.pop("heads", None)
            except (TypeError, ValueError) as exc:
                raise UserError(f"head param mlm: {exc}") from exc
            if settings:
                raise UserError(f"head param mlm: unknown field(s) {sorted(settings)}; allowed: weight, "
                                "depth, heads, rate, mask, random")
            self.mlm = CrossModalMLM(embed_dim, int(text_side.vocab_size), depth,
                                     int(heads) if heads is not None else None)

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_proj(features)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_proj(self.text_encoder(ids))

    def mlm_term(
        self, masked_ids: torch.Tensor, labels: torch.Tensor | None, image_tokens: torch.Tensor,
        targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """IRRA's MLM term: masked captions' tokens over their images' projected tokens, predicted at the
        targets (labels not ``IGNORE``); ``targets`` = ``target_positions(labels)`` computed on the host
        (then ``labels`` may be None): the same loss without a mask index on the device."""
        assert self.mlm is not None
        _, text_tokens = self.text_encoder.forward_tokens(masked_ids)
        if targets is None:
            assert labels is not None
            select = labels != IGNORE
            targets = select, labels[select]
        return mlm_loss(self.mlm(self.text_proj(text_tokens), image_tokens, targets[0]), targets[1])


def sdm_loss(
    image_feats: torch.Tensor, text_feats: torch.Tensor, pids: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """IRRA's similarity-distribution matching: KL(softmax(scaled cosine) || same-id distribution),
    image->text plus text->image, each summed over the batch row and averaged over rows."""
    image = F.normalize(image_feats.float(), dim=1)
    text = F.normalize(text_feats.float(), dim=1)
    same = (pids[:, None] == pids[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    t2i = logit_scale * text @ image.t()
    loss = torch.zeros((), device=image.device)
    for logits in (t2i, t2i.t()):
        predicted = F.softmax(logits, dim=1)
        kl = predicted * (F.log_softmax(logits, dim=1) - torch.log(target + SDM_EPSILON))
        loss = loss + kl.sum(1).mean()
    return loss


def id_loss(head: RetrievalHead, image_feats: torch.Tensor, text_feats: torch.Tensor, labels: torch.Tensor):
    """IRRA's ID loss: one identity classifier on both modalities, averaged."""
    image_logits = head.classifier(image_feats).float()
    text_logits = head.classifier(text_feats).float()
    return (F.cross_entropy(image_logits, labels) + F.cross_entropy(text_logits, labels)) / 2


def caption_pairs(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(image index, caption) for every caption: IRRA trains on image-caption pairs."""
    return [(i, caption) for i, record in enumerate(records) for caption in record["captions"]]


# Input normalisations of the image side (head param ``normalization``): ImageNet's (every other task,
# and the CPU protocol) or CLIP's (the IRRA recipe's), as (mean, std).
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (common.IMAGENET_MEAN, common.IMAGENET_STD),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # open_clip's
}


def image_stats(params: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    name = params.get("normalization", "imagenet")
    if name not in NORMALIZATIONS:
        raise UserError(f"head param normalization: {name!r} is not one of {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


def normalize(images: torch.Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    """(B, 3, H, W) floats in [0, 1] -> normalised with ``stats`` (mean, std)."""
    return common.normalize(images, stats)


def retrieval_augmentation(
    size: tuple[int, int], stats: tuple[tuple[float, ...], tuple[float, ...]] = NORMALIZATIONS["imagenet"]
) -> common.Augmentation:
    """IRRA's train transform: flip, pad 10 + random crop, random erasing of 2-40 % of the area (painted
    in the step, ``common.Augmentation``). IRRA erases *after* normalising, filling with the mean's
    numbers; on [0, 1] pixels that fill is ``mean * (1 + std)``, which normalises to exactly those
    numbers."""
    from torchvision.transforms import v2

    fill = [m * (1 + s) for m, s in zip(*stats, strict=True)]
    return common.Augmentation(
        v2.Compose([v2.RandomHorizontalFlip(0.5), v2.Pad(10), v2.RandomCrop(size)]),
        v2.RandomErasing(p=0.5, scale=(0.02, 0.4), value=fill),
    )


@TASKS.register("t2i_retrieval")
class RetrievalTask(SinglePersonTask):
    name: ClassVar[str] = "t2i_retrieval"
    datasets: ClassVar[tuple[str, ...]] = ("cuhk_pedes", "icfg_pedes")
    selections: ClassVar[tuple[str, ...]] = ("final", "best_test")

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        records = common.split_records(data, spec.splits["train"])
        captions = [caption for record in records for caption in record["captions"]]
        if not captions:
            raise UserError(f"{data.name}: the train split {spec.splits['train']!r} has no captions")
        params = self.params(spec)
        _, num_classes = relabel([r["pid"] for r in records])
        text_side = build_text_side(params.get("text_encoder"), captions)
        return RetrievalHead(
            backbone.num_features,
            text_side,
            int(params.get("embed_dim", 256)),
            num_classes,
            float(params.get("temperature", 0.02)),
            mlm=params.get("mlm"),
        )

    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        protocol = ctx.protocol_spec
        schedule = protocol.schedule
        params = self.params(ctx.spec)
        size = input_size(ctx.spec, params)
        all_records = common.split_records(ctx.data, ctx.spec.splits["train"])
        records = common.limit(all_records, ctx.max_train_samples, ctx.seed)
        labels_all, _ = relabel([r["pid"] for r in all_records])
        label_of = {r["path"]: int(label) for r, label in zip(all_records, labels_all, strict=True)}
        pairs = caption_pairs(records)
        pair_image = torch.tensor([i for i, _ in pairs])
        pair_labels = torch.tensor([label_of[records[i]["path"]] for i, _ in pairs])
        pair_tokens = head.tokenizer([caption for _, caption in pairs])
        id_weight = float(params.get("id_loss_weight", 1.0))
        stats = image_stats(params)
        device = torch.device(ctx.device)
        backbone = ctx.backbone.to(device)
        head.to(device).train()
        frozen = common.is_frozen(protocol.kind)
        common.set_backbone_trainable(backbone, not frozen)
        batch_size = min(schedule.batch_size, len(pairs))
        steps_per_epoch = max(1, len(pairs) // batch_size)

        if frozen and head.mlm is not None:
            raise UserError(f"{ctx.spec.key} protocol {ctx.protocol}: head param mlm needs the image tokens "
                            "of a trained backbone (a finetune protocol); the frozen path caches CLS only")
        if frozen and stats != NORMALIZATIONS["imagenet"]:
            raise UserError(f"{ctx.spec.key} protocol {ctx.protocol}: param normalization must be imagenet "
                            "for a frozen backbone (its cached features are ImageNet-normalised)")

        def losses(
            image_feats: torch.Tensor, index: torch.Tensor, image_tokens: torch.Tensor | None = None
        ) -> torch.Tensor:
            """SDM + ID (+ MLM): IRRA's sum, each term with its weight. What is gathered or drawn on the
            host (token ids, labels, MLM masks and target positions) reaches the device in one queued copy
            per group (``packed_to_device``), so no step waits for the device to drain."""
            ids = pair_tokens[index]
            ids_on_device, labels = packed_to_device([ids, pair_labels[index]], device)
            text_feats = head.encode_text(ids_on_device)
            loss = sdm_loss(image_feats, text_feats, labels, head.logit_scale)
            loss = loss + id_weight * id_loss(head, image_feats, text_feats, labels)
            if head.mlm is not None and image_tokens is not None:
                masked, targets = mask_tokens(ids, head.mask_id, head.masking)  # torch's global generator
                masked, positions, target_ids = packed_to_device([masked, *target_positions(targets)], device)
                mlm = head.mlm_term(masked, None, image_tokens, targets=(positions, target_ids))
                loss = loss + head.mlm_weight * mlm
            return loss

        def shuffled(epoch: int) -> list[torch.Tensor]:
            generator = torch.Generator().manual_seed(ctx.seed * 1000 + epoch)
            order = torch.randperm(len(pairs), generator=generator)
            return [order[i : i + batch_size] for i in range(0, steps_per_epoch * batch_size, batch_size)]

        if frozen:
            features = common.frozen_features(
                ctx, records, size, "cls", lambda x: {"cls": backbone.forward_features(x)["cls"]},
                interpolation=protocol.resize.test,
            )["cls"].to(device)
            history = common.fit_loop(
                head,
                shuffled,
                lambda index: losses(
                    head.encode_image(features[packed_to_device([pair_image[index]], device)[0]]), index),
                schedule,
                common.build_optimizer(common.schedule_param_groups(None, head, schedule), schedule),
                steps_per_epoch,
                amp=ctx.amp,
                device=device,
                description=f"retrieval/{ctx.data.name} linear",
                show_progress=ctx.show_progress,
                on_epoch_end=ctx.epoch_end,
                checkpoint=ctx.fit_checkpoint,
            )
        else:
            paths = [records[i]["path"] for i, _ in pairs]
            augmentation = retrieval_augmentation(size, stats)

            batches = common.image_epoch_batches(
                paths, size, augmentation, lambda epoch: [b.tolist() for b in shuffled(epoch)],
                steps_per_epoch, ctx.num_workers, device, interpolation=protocol.resize.train,
            )

            def step(batch: Any) -> torch.Tensor:
                images, index = common.augmented_images(batch, augmentation, device)  # queued copies
                out = backbone.forward_features(normalize(images, stats))
                if head.mlm is None:
                    return losses(head.encode_image(out["cls"]), index)
                # IRRA projects every image token; the CLS one is the embedding, all feed the MLM
                tokens = head.encode_image(torch.cat([out["cls"][:, None], out["tokens"]], 1))
                return losses(tokens[:, 0], index, tokens)

            history = common.finetune(
                backbone, head, batches, step, schedule, steps_per_epoch, ctx.amp, device,
                f"retrieval/{ctx.data.name} finetune", ctx.show_progress, on_epoch_end=ctx.epoch_end,
                checkpoint=ctx.fit_checkpoint,
            )
        return {
            **self.protocol_info(ctx),
            **common.fit_summary(history),
            "text_encoder": head.text_description,
            "losses": {"sdm": 1.0, "id": id_weight, "mlm": head.mlm_weight if head.mlm is not None else None},
            "normalization": params.get("normalization", "imagenet"),
            "n_samples": {
                "train": common.n_samples(len(all_records), len(records)),
                "train_captions": common.n_samples(len(caption_pairs(all_records)), len(pairs)),
            },
        }

    @torch.no_grad()
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        params = self.params(ctx.spec)
        size = input_size(ctx.spec, params)
        stats = image_stats(params)
        device = torch.device(ctx.device)
        backbone = ctx.backbone.to(device).eval()
        head.to(device).eval()
        all_records = common.split_records(ctx.data, ctx.spec.splits["test"])
        records = common.limit(all_records, ctx.max_eval_samples, ctx.seed)
        if common.is_frozen(ctx.protocol_spec.kind):
            cls = common.frozen_features(
                ctx, records, size, "cls", lambda x: {"cls": backbone.forward_features(x)["cls"]},
                interpolation=ctx.protocol_spec.resize.test,
            )["cls"]
            image_feats = torch.cat([head.encode_image(c.to(device)) for c in cls.split(1024)]).float().cpu()
        else:
            image_feats = common.sharded_extract(  # gathered over the ranks of a data-parallel unit
                lambda b: {
                    "f": head.encode_image(
                        backbone.forward_features(normalize(common.unit_images(b[0], device), stats))["cls"]
                    )
                },
                [r["path"] for r in records], size, ctx, interpolation=ctx.protocol_spec.resize.test,
            )["f"]
        pairs = caption_pairs(records)
        tokens = head.tokenizer([caption for _, caption in pairs])
        text_feats = (
            common.extract(
                lambda ids: {"f": head.encode_text(ids.to(device))},
                tokens.split(256),
                amp=ctx.amp,
                device=device,
            )["f"]
            if pairs
            else torch.zeros(0, image_feats.shape[1])
        )
        similarity = F.normalize(text_feats.float(), dim=1) @ F.normalize(image_feats.float(), dim=1).t()
        arrays = {
            "similarity": similarity.numpy().astype(np.float32),
            "text_pids": np.array([records[i]["pid"] for i, _ in pairs], dtype=np.int64),
            "image_pids": np.array([r["pid"] for r in records], dtype=np.int64),
            "captions": np.array([caption for _, caption in pairs]),
            "image_paths": np.array([r["path"] for r in records]),
        }
        out = ctx.out_dir / "predictions"
        out.mkdir(parents=True, exist_ok=True)
        path = out / "retrieval.npz"
        np.savez(path, **arrays)
        if isinstance(head.tokenizer, WordTokenizer):
            head.tokenizer.save(out / "tokenizer.json")
        self._n_eval = {
            "test_images": common.n_samples(len(all_records), len(records)),
            "test_captions": common.n_samples(len(caption_pairs(all_records)), len(pairs)),
        }
        for index in range(min(ctx.visualize, len(pairs))):
            order = torch.argsort(-similarity[index], stable=True)[:5]
            items = [
                (str(arrays["image_paths"][j]), bool(arrays["image_pids"][j] == arrays["text_pids"][index]))
                for j in order.tolist()
            ]
            ranking_strip(
                None,
                items,
                ctx.out_dir / "vis" / f"retrieval_text_{index:03d}.png",
                caption=str(arrays["captions"][index]),
            )
        return [path]

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        return evaluate_retrieval_file(predictions[0])
