"""Crowded pedestrian detection (CrowdHuman full body): torchvision RetinaNet on a simple feature pyramid.

Why RetinaNet: it is torchvision's own one-stage detector, needs no RoI ops, and its classification loss
already skips anchors marked "between thresholds"; we mark there every background anchor lying mostly
(IoA > 0.5) inside an ignore region (``mask`` boxes and persons with ``extra.ignore``), so crowds on
posters / reflections are neither positives nor negatives in training, as the evaluation treats them.

Protocols: ``finetune`` trains backbone + pyramid + head with horizontal flips; ``frozen`` caches the
frozen backbone's maps of the training images once (``ctx.cache_dir``) and trains pyramid + head. The
whole image is resized to the protocol's input size (boxes scaled, aspect not kept) and detections are
scaled back. Predictions: an odgt-like results file (``ID``, ``height``, ``width``, ``dtboxes`` with
``box`` x,y,w,h, ``score``, ``tag`` 1) scored by ``saip_bench.metrics.crowdhuman`` (AP, MR^-2, JI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import box_iou

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import to_device
from saip_bench.metrics import crowdhuman as crowd_metric
from saip_bench.specs import TaskSpec
from saip_bench.tasks import parallel
from saip_bench.tasks.base import TASKS, Task, UnitContext
from saip_bench.tasks.common import (
    build_optimizer,
    fit_loop,
    is_frozen,
    limit,
    load_rgb,
    n_samples,
    normalize,
    pil_to_tensor,
    schedule_param_groups,
    set_backbone_trainable,
)
from saip_bench.tasks.dense.features import head_params, input_size, level_channels, multi_level
from saip_bench.tasks.detection.pyramid import (
    SimpleFeaturePyramid,
    fp32_heads,
    image_list,
    pyramid_levels,
    scale_boxes,
)
from saip_bench.tasks.detection.training import cached_level_maps, mirrored_batches
from saip_bench.utils import atomic_write_text, autocast


class IgnoreAwareRetinaNet(RetinaNet):
    """RetinaNet whose background anchors inside ignore regions (IoA > 0.5) leave the loss."""

    ignore_ioa = 0.5

    def compute_loss(self, targets, head_outputs, anchors):  # type: ignore[override]
        matched_idxs = []
        for anchors_per_image, target in zip(anchors, targets, strict=True):
            if target["boxes"].numel() == 0:
                matched = torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64,
                                     device=anchors_per_image.device)
            else:
                matched = self.proposal_matcher(box_iou(target["boxes"], anchors_per_image))
            ignore = target.get("ignore")
            if ignore is not None and ignore.numel():
                matched[(matched < 0) & (anchor_ioa(anchors_per_image, ignore) > self.ignore_ioa)] = (
                    self.head.classification_head.BETWEEN_THRESHOLDS)
            matched_idxs.append(matched)
        return self.head.compute_loss(targets, head_outputs, anchors, matched_idxs)


def anchor_ioa(anchors: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Per anchor, the largest fraction of its area inside any region (x1y1x2y2 both)."""
    lt = torch.maximum(anchors[:, None, :2], regions[None, :, :2])
    rb = torch.minimum(anchors[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (anchors[:, 2:] - anchors[:, :2]).clamp(min=0).prod(-1)
    return (inter / area.clamp(min=1e-6)[:, None]).max(dim=1).values


class CrowdDetector(nn.Module):
    """Pyramid + RetinaNet (1 class) fed with backbone maps of images resized to ``size``."""

    def __init__(self, in_channels: list[int], single_scale: bool, levels: list[int], size: tuple[int, int],
                 channels: int = 128, score_thresh: float = 0.01, detections_per_img: int = 200) -> None:
        super().__init__()
        self.levels = levels
        self.size = size
        self.neck = SimpleFeaturePyramid(in_channels, channels, single_scale)
        base = max(8, min(size) // 16)
        sizes = tuple((base * 2**i, int(base * 2**i * 1.5)) for i in range(3))
        anchors = AnchorGenerator(sizes, ((1.0, 2.0, 3.0),) * 3)  # persons are tall: h/w ratios >= 1
        self.retina = IgnoreAwareRetinaNet(self.neck, num_classes=2, anchor_generator=anchors,
                                           score_thresh=score_thresh, detections_per_img=detections_per_img,
                                           topk_candidates=1000)

    def _head(self, maps: list[torch.Tensor]):
        features = list(self.neck(maps).values())
        outputs = self.retina.head(features)
        anchors = self.retina.anchor_generator(image_list(maps[0].shape[0], self.size, maps[0]), features)
        return features, outputs, anchors

    @fp32_heads
    def losses(self, maps: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        targets = to_device(targets, maps[0].device)  # boxes meet anchors made on the maps' device
        _, outputs, anchors = self._head(maps)
        losses = self.retina.compute_loss(targets, {k: v.float() for k, v in outputs.items()}, anchors)
        return sum(losses.values())

    @torch.no_grad()
    @fp32_heads
    def detect(self, maps: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        features, outputs, anchors = self._head(maps)
        per_level = [f.size(2) * f.size(3) for f in features]
        per_anchor = outputs["cls_logits"].size(1) // sum(per_level)
        per_level = [n * per_anchor for n in per_level]
        split_outputs = {k: list(v.float().split(per_level, dim=1)) for k, v in outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        return self.retina.postprocess_detections(split_outputs, split_anchors, [self.size] * len(anchors))


def load_sample(
    record: dict[str, Any], size: tuple[int, int]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image resized to ``size`` and its targets there: full-body boxes (label 1) and ignore regions."""
    image = load_rgb(record["path"])
    original = (image.height, image.width)
    persons = [b["fbox"] for b in record["boxes"] if not b["ignore"]]
    ignores = [b["fbox"] for b in record["boxes"] if b["ignore"]]

    def to_xyxy(boxes: list[list[float]]) -> torch.Tensor:
        rows = [[x, y, x + w, y + h] for x, y, w, h in boxes]
        xyxy = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, original[1])
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, original[0])
        return scale_boxes(xyxy, original, size)

    boxes = to_xyxy(persons)
    boxes = boxes[((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)]
    target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "ignore": to_xyxy(ignores)}
    return pil_to_tensor(image, size), target


def flip_target(target: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    flipped = dict(target)
    for key in ("boxes", "ignore"):
        boxes = target[key].clone()
        boxes[:, [0, 2]] = width - target[key][:, [2, 0]]
        flipped[key] = boxes
    return flipped


@TASKS.register("detection", datasets=("crowdhuman",))
class CrowdHumanTask(Task):
    name: ClassVar[str] = "detection"
    datasets: ClassVar[tuple[str, ...]] = ("crowdhuman",)
    shards_predict: ClassVar[bool] = True  # images detected in shards, lines gathered (predict)

    def run(self, ctx: UnitContext):
        self._protocol = ctx.protocol
        return super().run(ctx)

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        protocol = getattr(self, "_protocol", spec.default_protocol)
        params = head_params(spec, protocol)
        levels = pyramid_levels(backbone)
        channels = level_channels(backbone, levels, (64, 64))
        return CrowdDetector(channels, backbone.family == "vit", levels, input_size(spec, protocol),
                             int(params.get("channels", 128)), float(params.get("score_thresh", 0.01)),
                             int(params.get("detections_per_img", 200)))

    # ---- data -----------------------------------------------------------------------------------
    def _records(self, ctx: UnitContext, role: str) -> tuple[list[dict[str, Any]], int]:
        records = ctx.data.splits[ctx.spec.splits[role]]
        n = ctx.max_train_samples if role == "train" else ctx.max_eval_samples
        return limit(records, n, ctx.seed), len(records)

    # ---- training -------------------------------------------------------------------------------
    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        assert isinstance(head, CrowdDetector)
        records, original = self._records(ctx, "train")
        frozen = is_frozen(ctx.protocol_spec.kind)
        schedule = ctx.protocol_spec.schedule
        set_backbone_trainable(ctx.backbone, not frozen)
        head.to(ctx.device).train()
        batch_size = min(schedule.batch_size, max(1, len(records)))
        steps_per_epoch = max(1, len(records) // batch_size)
        generator = torch.Generator().manual_seed(ctx.seed)
        targets = [load_sample(r, head.size)[1] for r in records] if frozen else []
        if frozen:
            maps = self._cached_maps(ctx, head, records)

            def batches(epoch: int):
                order = torch.randperm(len(records), generator=generator)
                for start in range(0, steps_per_epoch * batch_size, batch_size):
                    index = order[start:start + batch_size]
                    yield [m[index].to(ctx.device) for m in maps], [targets[int(i)] for i in index]

            def loss_fn(batch) -> torch.Tensor:
                level_maps, batch_targets = batch
                return head.losses(level_maps, batch_targets)

            model: nn.Module = head
            groups = schedule_param_groups(None, head, schedule)
        else:
            batches = mirrored_batches(
                records, lambda r: load_sample(r, head.size), flip_target, head.size[1],
                batch_size, steps_per_epoch, generator, ctx.device, ctx.num_workers,
            )

            def loss_fn(batch) -> torch.Tensor:
                images, batch_targets = batch
                return head.losses(multi_level(ctx.backbone, normalize(images), head.levels), batch_targets)

            model = nn.ModuleDict({"backbone": ctx.backbone, "head": head})
            groups = schedule_param_groups(ctx.backbone, head, schedule)
        optimizer = build_optimizer(groups, schedule)
        info = fit_loop(model, batches, loss_fn, schedule, optimizer, steps_per_epoch, ctx.amp, ctx.device,
                        description=f"{ctx.spec.key} {ctx.protocol}", show_progress=ctx.show_progress,
                        checkpoint=ctx.fit_checkpoint)
        eval_records, eval_original = self._records(ctx, "eval")
        info["n_samples"] = {"train": n_samples(original, len(records)),
                             "eval": n_samples(eval_original, len(eval_records))}
        info["input_size"] = list(head.size)
        return info

    def _cached_maps(self, ctx: UnitContext, head: CrowdDetector, records: list[dict[str, Any]]):
        return cached_level_maps(ctx, head.size, head.levels, records, "detection")

    # ---- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        assert isinstance(head, CrowdDetector)
        records, _ = self._records(ctx, "eval")
        ctx.backbone.eval()
        head.eval()
        # a data-parallel unit: each rank detects in its contiguous share of the images and every rank
        # gathers the lines in order (rank 0 writes them; Task.predict_and_score)
        dp = parallel.current()
        ranks = dp if dp is not None and dp.distributed and self.shards_predict else None
        first, stop = ranks.shard_range(len(records)) if ranks is not None else (0, len(records))

        def detect_share() -> list[dict[str, Any]]:
            lines = []
            for start in range(first, stop, 8):
                chunk = records[start:min(start + 8, stop)]
                originals = [load_rgb(r["path"]) for r in chunk]
                images = torch.stack([pil_to_tensor(im, head.size) for im in originals]).to(ctx.device)
                with autocast(ctx.device, enabled=ctx.amp):
                    maps = multi_level(ctx.backbone, normalize(images), head.levels)
                detections = head.detect([m.float() for m in maps])
                for offset, (record, image, found) in enumerate(
                        zip(chunk, originals, detections, strict=True)):
                    hw = (image.height, image.width)
                    boxes = scale_boxes(found["boxes"].float().cpu(), head.size, hw)
                    scores = found["scores"].tolist()
                    dtboxes = [{"box": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": round(s, 5), "tag": 1}
                               for (x1, y1, x2, y2), s in zip(boxes.tolist(), scores, strict=True)]
                    lines.append({"ID": record["id"], "height": image.height, "width": image.width,
                                  "dtboxes": dtboxes})
                    if start + offset < ctx.visualize:
                        vis = ctx.out_dir / "vis" / f"{start + offset + 1:04d}.png"
                        draw_boxes(image, record, dtboxes, vis)
            return lines

        mine = parallel.agreed(detect_share, f"{ctx.spec.key}: detection", ranks)
        lines = [line for share in parallel.gather_objects(mine, ranks) for line in share]
        path = ctx.out_dir / "predictions" / "results.odgt"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in lines))
        return [path]

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        records, _ = self._records(ctx, "eval")
        wanted = {r["id"] for r in records}
        gt_file = ctx.data.meta.get("gt_files", {}).get(ctx.spec.splits["eval"])
        if gt_file:  # score against the official file itself (restricted to the evaluated images)
            gt = [g for g in crowd_metric.read_odgt(gt_file) if str(g["ID"]) in wanted]
        else:
            gt = [{"ID": r["id"], "gtboxes": [{"tag": b["tag"], "fbox": b["fbox"],
                                               "extra": {"ignore": int(b["ignore"])}} for b in r["boxes"]]}
                  for r in records]
        results = crowd_metric.read_odgt(predictions[0])
        return crowd_metric.evaluate(gt, results, str(gt_file), str(predictions[0]))


def draw_boxes(image: Image.Image, record: dict[str, Any], dtboxes: list[dict[str, Any]], path: Path,
               min_score: float = 0.3) -> None:
    """GT full boxes (green), ignore regions (grey) and detections above ``min_score`` (red)."""
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    for box in record["boxes"]:
        x, y, w, h = box["fbox"]
        draw.rectangle([x, y, x + w, y + h], outline=(128, 128, 128) if box["ignore"] else (0, 200, 0))
    for det in dtboxes:
        if det["score"] >= min_score:
            x, y, w, h = det["box"]
            draw.rectangle([x, y, x + w, y + h], outline=(230, 0, 0), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)

