"""Crowded pedestrian detection (CrowdHuman full body): CrowdDet or a torchvision RetinaNet, per protocol.

Detectors (``head.params.detector``): ``crowddet`` (``saip_bench.tasks.detection.crowddet``: P2-P6
pyramid, RPN, multi-instance RoI head with the EMD loss, set NMS; the authors' recipe) on images resized
with their aspect kept (short side ``min(input_size)``, long side at most ``max(input_size)``, padded to
``size_divisor``); ``retinanet``: torchvision's one-stage detector on a 3-level simple pyramid with the whole
image resized to ``input_size`` (aspect not kept), whose classification loss skips background anchors lying
mostly (IoA > 0.5) inside an ignore region. Both keep ignore regions (``mask`` boxes and persons with
``extra.ignore``) out of training, as the evaluation treats them.

Protocols: ``finetune`` trains backbone + pyramid + head with horizontal flips; ``frozen`` caches the
frozen backbone's maps of the training images once (``ctx.cache_dir``) and trains pyramid + head.
Detections are mapped back to the original image. Predictions: an odgt-like results file (``ID``,
``height``, ``width``, ``dtboxes`` with ``box`` x,y,w,h, ``score``, ``tag`` 1) scored by
``saip_bench.metrics.crowdhuman`` (AP, MR^-2, JI).

Bad boxes (docs/tasks_multi_person.md#crowdhuman): a box with non-positive width or height is skipped
in training, and a tag other than ``person`` / ``mask`` is kept as an ignore region (the reader's and the
evaluator's rule); both are reported once per unit with the image ID.
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
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
from saip_bench.devices import to_device, unit_float
from saip_bench.errors import SpecError
from saip_bench.metrics import crowdhuman as crowd_metric
from saip_bench.specs import TaskSpec
from saip_bench.tasks import parallel
from saip_bench.tasks.base import TASKS, UnitContext
from saip_bench.tasks.common import (
    load_rgb,
    normalize,
    pil_to_uint8,
)
from saip_bench.tasks.dense.features import head_params, input_size, level_channels, multi_level
from saip_bench.tasks.detection.crowddet import CrowdDet
from saip_bench.tasks.detection.pyramid import (
    SimpleFeaturePyramid,
    fp32_heads,
    image_list,
    pyramid_levels,
    scale_boxes,
)
from saip_bench.tasks.detection.resize import ShortSideResize, pad_to_canvas, padded_collate
from saip_bench.tasks.detection.training import (
    DetectionTask,
    cached_level_maps,
    cached_map_batches,
    mirrored_batches,
    plan_fit,
)
from saip_bench.utils import atomic_write_text, autocast

log = logging.getLogger(__name__)
KNOWN_TAGS = ("person", "mask")
DETECTORS = ("crowddet", "retinanet")


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


def crowd_boxes(record: dict[str, Any]) -> tuple[list[list[float]], list[list[float]], list[str]]:
    """Full-body boxes (x, y, w, h) of the record's persons and ignore regions, and what was wrong.

    A box with non-positive width or height is left out; a tag other than ``person`` / ``mask`` stays an
    ignore region (the reader marks it so, and the evaluator ignores it too). Each problem is one line
    naming the image ID and the box index, for ``report_bad_boxes``.
    """
    persons, ignores, problems = [], [], []
    for index, box in enumerate(record["boxes"]):
        where = f"image {record['id']!r} gtboxes[{index}]"
        x, y, w, h = box["fbox"]
        if not (w > 0 and h > 0):
            problems.append(f"{where}: fbox {box['fbox']} has a non-positive size; box skipped")
            continue
        if box["tag"] not in KNOWN_TAGS:
            problems.append(f"{where}: unknown tag {box['tag']!r} (expected one of {KNOWN_TAGS}); "
                            "kept as an ignore region")
        (ignores if box["ignore"] else persons).append([x, y, w, h])
    return persons, ignores, problems


def report_bad_boxes(records: list[dict[str, Any]], role: str, shown: int = 5) -> list[str]:
    """Log (once per unit) the boxes ``crowd_boxes`` skipped or re-read, with image IDs; returns them."""
    problems = [line for r in records for line in crowd_boxes(r)[2]]
    if problems:
        more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
        log.warning("CrowdHuman %s split: %d box problem(s): %s%s", role, len(problems),
                    "; ".join(problems[:shown]), more)
    return problems


def xywh_to_xyxy(boxes: list[list[float]], original: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """x, y, w, h boxes of an image of size ``original`` -> x1y1x2y2 clipped to it, scaled to ``size``."""
    rows = [[x, y, x + w, y + h] for x, y, w, h in boxes]
    xyxy = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, original[1])
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, original[0])
    return scale_boxes(xyxy, original, size)


def sample_target(record: dict[str, Any], original: tuple[int, int],
                  size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Targets in an image resized from ``original`` to ``size``: persons at least 1 px a side (label 1)
    and ignore regions."""
    persons, ignores, _ = crowd_boxes(record)
    boxes = xywh_to_xyxy(persons, original, size)
    boxes = boxes[((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)]
    return {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64),
            "ignore": xywh_to_xyxy(ignores, original, size)}


def load_sample(
    record: dict[str, Any], size: tuple[int, int]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image resized to ``size`` (uint8) and its targets there: full-body boxes (label 1) and ignore
    regions."""
    image = load_rgb(record["path"])
    return pil_to_uint8(image, size), sample_target(record, (image.height, image.width), size)


def keep_ratio_resize(spec: TaskSpec, protocol: str | None) -> ShortSideResize:
    """The protocol's ``input_size`` read as (short side, longest long side) and ``head.size_divisor``."""
    size = input_size(spec, protocol)
    divisor = head_params(spec, protocol).get("size_divisor", 64)
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise SpecError(f"task spec {spec.key}, protocol {protocol!r}: head.size_divisor: expected a "
                        f"positive integer, found {divisor!r}")
    return ShortSideResize(min(size), max(size), divisor)


def load_keep_ratio(record: dict[str, Any],
                    resize: ShortSideResize) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image resized with its aspect kept (not padded; uint8) and its targets there, plus ``image_size``
    (h, w) and ``sample_seed`` (a stable number of the image ID, for the detector's seeded sampling; a
    Python int, so it stays on the host when the batch moves: the sampler seeds host generators with it)."""
    image = load_rgb(record["path"])
    original = (image.height, image.width)
    size = resize.resized_hw(original)
    target = sample_target(record, original, size)
    target["image_size"] = torch.tensor(size)
    target["sample_seed"] = zlib.crc32(str(record["id"]).encode()) % 2**31
    return pil_to_uint8(image, size), target


def flip_own_width(target: dict[str, torch.Tensor], _width: int) -> dict[str, torch.Tensor]:
    """``flip_target`` at the image's own width (aspect-kept images differ in width)."""
    return flip_target(target, int(target["image_size"][1]))


def image_sizes(targets: list[dict[str, torch.Tensor]]) -> list[tuple[int, int]]:
    return [(int(t["image_size"][0]), int(t["image_size"][1])) for t in targets]


def record_hw(record: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of a record's image: the reader's sizes, else the image header."""
    if record.get("height") and record.get("width"):
        return int(record["height"]), int(record["width"])
    with Image.open(record["path"]) as image:
        return image.height, image.width


def flip_target(target: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    flipped = dict(target)
    for key in ("boxes", "ignore"):
        boxes = target[key].clone()
        boxes[:, [0, 2]] = width - target[key][:, [2, 0]]
        flipped[key] = boxes
    return flipped


@TASKS.register("detection", datasets=("crowdhuman",))
class CrowdHumanTask(DetectionTask):
    name: ClassVar[str] = "detection"
    datasets: ClassVar[tuple[str, ...]] = ("crowdhuman",)
    shards_predict: ClassVar[bool] = True  # images detected in shards, lines gathered (predict)

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        protocol = getattr(self, "_protocol", spec.default_protocol)
        params = head_params(spec, protocol)
        detector = params.get("detector", "retinanet")
        if detector not in DETECTORS:
            raise SpecError(f"task spec {spec.key}, protocol {protocol!r}: head.detector: expected one of "
                            f"{DETECTORS}, found {detector!r}")
        single_scale = backbone.family == "vit"
        if detector == "retinanet":
            levels = pyramid_levels(backbone)
            channels = level_channels(backbone, levels, (64, 64))
            return CrowdDetector(channels, single_scale, levels, input_size(spec, protocol),
                                 int(params.get("channels", 128)), float(params.get("score_thresh", 0.01)),
                                 int(params.get("detections_per_img", 200)))
        levels = pyramid_levels(backbone, num_levels=5)
        channels = level_channels(backbone, levels, (64, 64))
        rpn = params.get("rpn", {})
        return CrowdDet(
            channels, single_scale, levels, channels=int(params.get("channels", 256)),
            instances=int(params.get("instances", 2)), refine=bool(params.get("refine", False)),
            anchor_size=float(params.get("anchor_size", 32)),
            aspect_ratios=tuple(float(r) for r in params.get("aspect_ratios", (1.0, 2.0, 3.0))),
            rpn_pre_nms=tuple(int(n) for n in rpn.get("pre_nms", (2400, 1200))),  # type: ignore[arg-type]
            rpn_post_nms=tuple(int(n) for n in rpn.get("post_nms", (2000, 1000))),  # type: ignore[arg-type]
            rois_per_image=int(params.get("rois_per_image", 512)),
            score_thresh=float(params.get("score_thresh", 0.01)),
            nms_thresh=float(params.get("nms_thresh", 0.5)),
            detections_per_img=int(params.get("detections_per_img", 500)),
            representation=int(params.get("representation", 1024)))

    # ---- training -------------------------------------------------------------------------------
    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        if isinstance(head, CrowdDet):
            return self._fit_crowddet(ctx, head)
        assert isinstance(head, CrowdDetector)
        records, original = self._records(ctx, "train")
        report_bad_boxes(records, "train")
        plan = plan_fit(ctx, head, len(records))
        if plan.frozen:
            targets = [load_sample(r, head.size)[1] for r in records]
            batches = cached_map_batches(self._cached_maps(ctx, head, records), targets, plan, ctx.device)

            def loss_fn(batch) -> torch.Tensor:
                level_maps, batch_targets = batch
                return head.losses(level_maps, batch_targets)
        else:
            batches = mirrored_batches(
                records, lambda r: load_sample(r, head.size), flip_target, head.size[1],
                plan.batch_size, plan.steps_per_epoch, plan.generator, ctx.device, ctx.num_workers,
            )

            def loss_fn(batch) -> torch.Tensor:
                images, batch_targets = batch
                pixels = normalize(unit_float(images))
                return head.losses(multi_level(ctx.backbone, pixels, head.levels), batch_targets)

        info = self._fit_and_count(ctx, head, plan, batches, loss_fn, len(records), original)
        info["input_size"] = list(head.size)
        return info

    def _cached_maps(self, ctx: UnitContext, head: CrowdDetector, records: list[dict[str, Any]]):
        return cached_level_maps(ctx, head.size, head.levels, records, "detection")

    def _fit_crowddet(self, ctx: UnitContext, head: CrowdDet) -> dict[str, Any]:
        """CrowdDet's fit: aspect-kept images padded per batch (fine-tune, with flips) or to one canvas
        (frozen cache); each image's sampling seeded from its ID, the epoch and the unit's seed."""
        records, original = self._records(ctx, "train")
        report_bad_boxes(records, "train")
        # the recipe's training filter: images without a person box or under 32 px a side are left out
        usable = [r for r in records if crowd_boxes(r)[0] and min(record_hw(r)) >= 32]
        records = usable or records
        resize = keep_ratio_resize(ctx.spec, ctx.protocol)
        plan = plan_fit(ctx, head, len(records))

        def seeded(targets: list[dict[str, torch.Tensor]], epoch: int) -> list[dict[str, torch.Tensor]]:
            offset = (epoch * 7919 + ctx.seed * 104729) % 2**31
            return [dict(t, seed=(t["sample_seed"] + offset) % 2**31) for t in targets]

        if plan.frozen:
            sizes = [resize.resized_hw(record_hw(r)) for r in records]
            canvas = resize.padded_hw(sizes)
            targets = [dict(sample_target(r, record_hw(r), size), image_size=torch.tensor(size),
                            sample_seed=zlib.crc32(str(r["id"]).encode()) % 2**31)
                       for r, size in zip(records, sizes, strict=True)]
            maps = cached_level_maps(ctx, canvas, head.levels, records, "detection",
                                     load=lambda r: pad_to_canvas([load_keep_ratio(r, resize)[0]], canvas)[0],
                                     layout=f"keep-ratio {resize.short}/{resize.max_long}/{resize.divisor}")
            batches = cached_map_batches(maps, targets, plan, ctx.device, per_epoch=seeded)

            def loss_fn(batch) -> torch.Tensor:
                level_maps, batch_targets = batch
                return head.losses(level_maps, batch_targets, image_sizes(batch_targets), canvas)
        else:
            mirrored = mirrored_batches(
                records, lambda r: load_keep_ratio(r, resize), flip_own_width, 0, plan.batch_size,
                plan.steps_per_epoch, plan.generator, ctx.device, ctx.num_workers,
                collate=padded_collate(resize.divisor))

            @functools.wraps(mirrored)  # keeps epoch_batches' marks (sharded for data parallelism, replays)
            def batches(epoch: int):
                for images, batch_targets, sizes in mirrored(epoch):
                    yield images, seeded(batch_targets, epoch), sizes

            def loss_fn(batch) -> torch.Tensor:
                images, batch_targets, sizes = batch
                # normalised with the padding (CrowdHuman's behaviour so far; mmdet pads after normalising)
                maps = multi_level(ctx.backbone, normalize(unit_float(images)), head.levels)
                return head.losses(maps, batch_targets, sizes, tuple(images.shape[-2:]))

        info = self._fit_and_count(ctx, head, plan, batches, loss_fn, len(records), original)
        info["input_size"] = [resize.short, resize.max_long]
        return info

    # ---- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        assert isinstance(head, (CrowdDetector, CrowdDet))
        records, _ = self._records(ctx, "eval")
        resize = keep_ratio_resize(ctx.spec, ctx.protocol) if isinstance(head, CrowdDet) else None
        ctx.backbone.eval()
        head.eval()
        path = ctx.out_dir / "predictions" / "results.odgt"

        def detect_share(first: int, stop: int) -> list[dict[str, Any]]:
            lines = []
            for start in range(first, stop, 8):
                chunk = records[start:min(start + 8, stop)]
                originals = [load_rgb(r["path"]) for r in chunk]
                if resize is not None:  # CrowdDet: aspect kept, the chunk padded
                    sizes = [resize.resized_hw((im.height, im.width)) for im in originals]
                    padded = resize.padded_hw(sizes)
                    resized = [pil_to_uint8(im, hw) for im, hw in zip(originals, sizes, strict=True)]
                    images = pad_to_canvas(resized, padded).to(ctx.device)
                else:
                    sizes = [head.size] * len(originals)
                    images = torch.stack([pil_to_uint8(im, head.size) for im in originals]).to(ctx.device)
                with autocast(ctx.device, enabled=ctx.amp):
                    maps = multi_level(ctx.backbone, normalize(unit_float(images)), head.levels)
                maps = [m.float() for m in maps]
                detections = head.detect(maps, sizes, padded) if resize is not None else head.detect(maps)
                for image, found, size, record in zip(originals, detections, sizes, chunk, strict=True):
                    hw = (image.height, image.width)
                    boxes = scale_boxes(found["boxes"].float().cpu(), size, hw)
                    scores = found["scores"].tolist()
                    dtboxes = [{"box": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": round(s, 5), "tag": 1}
                               for (x1, y1, x2, y2), s in zip(boxes.tolist(), scores, strict=True)]
                    lines.append({"ID": record["id"], "height": image.height, "width": image.width,
                                  "dtboxes": dtboxes})
            return lines

        def write(lines: list[dict[str, Any]]) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in lines))
            for index, (record, line) in enumerate(zip(records[:ctx.visualize], lines, strict=False)):
                draw_boxes(load_rgb(record["path"]), record, line["dtboxes"],
                           ctx.out_dir / "vis" / f"{index + 1:04d}.png")

        # a data-parallel unit: each rank detects in its contiguous share of the images, rank 0 writes
        parallel.predict_in_shards(len(records), detect_share, write, f"{ctx.spec.key}: detection",
                                   self.prediction_ranks())
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


