"""Fashionpedia: instance segmentation of garments and parts with a multi-label attribute branch.

Model: torchvision Mask R-CNN (RPN, RoIAlign box and mask heads, its losses and post-processing) on a
feature pyramid of the backbone, plus an attribute branch: one logit per attribute (294 in the 2020 files;
ids are mapped through the file's ``attributes`` list, so non-contiguous ids are fine), applied to the
detected boxes at test time (only for categories that carry attributes). Categories are the file's 0-based
ids (label = id + 1 inside torchvision).

Protocols (docs/tasks_multi_person.md#fashionpedia): ``finetune`` is the authors' KE-RCNN recipe: P2-P6,
anchors of 8 x stride, aspect-preserving multi-scale training and a 1024 test size on padded batches, the
knowledge-aware attribute head with threshold 0.3 (``tasks/detection/fashion_rcnn.py``). ``frozen`` caches
the frozen backbone maps of the training images once at one fixed size and trains a compact pyramid +
heads with an MLP attribute branch (threshold 0.5). Predictions: two official-format result files, masks
(``segmentation`` RLE, no ``bbox``, so areas are mask areas) and boxes (``bbox``), each with
``attribute_ids`` and ``score``; scored by ``saip_bench.metrics.fashionpedia`` (AP^(IoU+F1), IoU-only,
F1-only and COCO AP).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import MultiScaleRoIAlign

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import to_device, unit_float
from saip_bench.errors import SpecError
from saip_bench.metrics import fashionpedia as fashion_metric
from saip_bench.specs import TaskSpec
from saip_bench.tasks import parallel
from saip_bench.tasks.base import TASKS, UnitContext
from saip_bench.tasks.common import (
    is_frozen,
    load_rgb,
    normalize,
    pil_to_uint8,
)
from saip_bench.tasks.dense.features import (
    head_params,
    input_size,
    level_channels,
    multi_level,
    protocol_params,
)
from saip_bench.tasks.dense.vis import palette
from saip_bench.tasks.detection.fashion_rcnn import (
    FashionHeadParams,
    FixedStrideAnchorGenerator,
    KnowledgeAttributeHead,
    attribute_loss,
    chosen_attributes,
    knowledge_matrix,
    level_anchor_sizes,
    sample_positives,
    validated,
)
from saip_bench.tasks.detection.pyramid import (
    SimpleFeaturePyramid,
    fp32_heads,
    image_list,
    pyramid_levels,
    pyramid_strides,
    scale_boxes,
)
from saip_bench.tasks.detection.resize import (
    LongSideResize,
    image_hw,
    keep_ratio_batches,
    load_resized,
    long_side_size,
    normalize_padded,
    pad_images,
    padded_size,
)
from saip_bench.tasks.detection.training import (
    DetectionTask,
    cached_level_maps,
    cached_map_batches,
    mirrored_batches,
    plan_fit,
)
from saip_bench.utils import atomic_write_json, autocast


class AttributeHead(nn.Module):
    """RoIAlign (7x7 over the pyramid) -> 2-layer MLP -> attribute logits (the CPU protocol's branch)."""

    def __init__(self, channels: int, num_attributes: int, names: list[str] | None = None,
                 sampling_ratio: int = 2, hidden: int = 256) -> None:
        super().__init__()
        self.pool = MultiScaleRoIAlign(names or ["0", "1", "2"], 7, sampling_ratio)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels * 49, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_attributes))

    def forward(self, features, boxes: list[torch.Tensor], sizes: list[tuple[int, int]]) -> torch.Tensor:
        return self.mlp(self.pool(features, boxes, sizes))


class FashionModel(nn.Module):
    """Pyramid + torchvision Mask R-CNN + attribute branch, fed with backbone maps.

    ``params`` chooses between the CPU protocol's compact model (the defaults: 3 levels, anchors from the
    input size, MLP heads) and the recipe's (P2-P6, anchors of 8 x stride, 4-conv + FC box head, the
    knowledge-aware attribute head; tasks/fashion/fashionpedia.yaml, ``finetune``). ``size`` is the fixed
    input size of the whole-image resize; under an aspect-preserving resize each call passes the images'
    own sizes and the padded canvas instead.
    """

    def __init__(self, in_channels: list[int], single_scale: bool, levels: list[int], size: tuple[int, int],
                 num_categories: int, num_attributes: int, params: FashionHeadParams | None = None,
                 strides: tuple[int, ...] = (8, 16, 32), knowledge: torch.Tensor | None = None,
                 resize: LongSideResize | None = None) -> None:
        super().__init__()
        params = params or FashionHeadParams()
        self.params = params
        self.resize = resize
        self.levels = levels
        self.size = size
        channels = params.channels
        num_levels = 5 if params.pyramid == "p2_p6" else 3
        self.neck = SimpleFeaturePyramid(in_channels, channels, single_scale, num_levels)
        ratios = tuple(float(r) for r in params.anchor_ratios)
        if params.anchor_scale is None:
            base = max(8, min(size) // 16)
            anchors: AnchorGenerator = AnchorGenerator(
                tuple((base * 2**i, base * 2**i * 2) for i in range(num_levels)), (ratios,) * num_levels)
        else:
            anchors = FixedStrideAnchorGenerator(level_anchor_sizes(params.anchor_scale, strides),
                                                 (ratios,) * num_levels, strides)
        names = [str(i) for i in range(min(num_levels, 4))]  # RoIs pool P2-P5 (mmdet's strides 4-32), not P6
        classes = num_categories + 1
        if params.box_head == "mlp":
            # heads sized to the pyramid width (torchvision's defaults, 1024-d box MLP and 4x256 mask convs,
            # dominate CPU time at the CPU protocol's input sizes)
            box_head: nn.Module = TwoMLPHead(channels * 49, 4 * channels)
            box_width = 4 * channels
        else:  # mmdet's Shared4Conv1FCBBoxHead: 4 3x3 convs at the pyramid width, one 1024-d FC
            box_head = FastRCNNConvFCHead((channels, 7, 7), [channels] * 4, [1024])
            box_width = 1024
        sampling = params.roi_sampling_ratio
        self.rcnn = MaskRCNN(
            self.neck, num_classes=None, rpn_anchor_generator=anchors,
            box_head=box_head, box_predictor=FastRCNNPredictor(box_width, classes),
            mask_head=MaskRCNNHeads(channels, (channels,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(channels, channels, classes),
            box_roi_pool=MultiScaleRoIAlign(names, 7, sampling),
            mask_roi_pool=MultiScaleRoIAlign(names, 14, sampling),
            rpn_pre_nms_top_n_train=params.rpn_pre_nms_train or 2 * params.rpn_post_nms_train,
            rpn_post_nms_top_n_train=params.rpn_post_nms_train,
            rpn_pre_nms_top_n_test=params.rpn_pre_nms_test, rpn_post_nms_top_n_test=params.rpn_post_nms_test,
            rpn_nms_thresh=params.rpn_nms, box_nms_thresh=params.box_nms,
            box_batch_size_per_image=params.box_batch_per_image,
            box_detections_per_img=params.detections_per_img, box_score_thresh=params.score_thresh,
        )
        head = params.attributes
        self.attribute_threshold = head.threshold
        self.num_attributes = num_attributes
        if head.type == "mlp":
            self.attributes: nn.Module = AttributeHead(channels, num_attributes, names, sampling)
        else:
            prior = knowledge if knowledge is not None else torch.zeros(num_categories, num_attributes)
            self.attributes = KnowledgeAttributeHead(channels, num_attributes, prior, names, sampling,
                                                     head.dim, head.heads, head.layers)

    def _images(self, maps: list[torch.Tensor], sizes: list[tuple[int, int]] | None,
                canvas: tuple[int, int] | None) -> ImageList:
        """What torchvision's RPN / RoI heads read of the batch: its canvas and each image's own size."""
        if sizes is None:
            return image_list(maps[0].shape[0], self.size, maps[0])
        canvas = canvas or padded_size(sizes, 1)
        tensors = maps[0].new_zeros((len(sizes), 1, *canvas)).expand(len(sizes), 3, *canvas)
        return ImageList(tensors, [tuple(s) for s in sizes])

    def _attribute_logits(self, features, boxes: list[torch.Tensor], labels: torch.Tensor,
                          sizes: list[tuple[int, int]]) -> torch.Tensor:
        if isinstance(self.attributes, KnowledgeAttributeHead):
            return self.attributes(features, boxes, labels - 1, sizes)  # 0-based categories index the prior
        return self.attributes(features, boxes, sizes)

    @fp32_heads
    def losses(self, maps: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
               sizes: list[tuple[int, int]] | None = None,
               canvas: tuple[int, int] | None = None) -> torch.Tensor:
        targets = to_device(targets, maps[0].device)  # boxes meet anchors made on the maps' device
        features = self.neck(maps)
        images = self._images(maps, sizes, canvas)
        proposals, rpn_losses = self.rcnn.rpn(images, features, targets)
        _, roi_losses = self.rcnn.roi_heads(features, proposals, images.image_sizes, targets)
        total = sum(rpn_losses.values()) + sum(roi_losses.values())
        head = self.params.attributes
        if head.type == "knowledge" and head.max_positives is not None:
            iou = float(self.rcnn.roi_heads.proposal_matcher.high_threshold)
            boxes, labels, wanted = sample_positives(proposals, targets, iou, head.max_positives)
        else:
            boxes = [t["boxes"] for t in targets]
            labels = torch.cat([t["labels"] for t in targets])
            wanted = torch.cat([t["attributes"] for t in targets])
        if sum(len(b) for b in boxes):
            logits = self._attribute_logits(features, boxes, labels, images.image_sizes)
            total = total + attribute_loss(logits, wanted, head.loss_weight)
        return total

    @torch.no_grad()
    @fp32_heads
    def detect(self, maps: list[torch.Tensor], sizes: list[tuple[int, int]] | None = None,
               canvas: tuple[int, int] | None = None) -> list[dict[str, torch.Tensor]]:
        features = self.neck(maps)
        images = self._images(maps, sizes, canvas)
        proposals, _ = self.rcnn.rpn(images, features)
        detections, _ = self.rcnn.roi_heads(features, proposals, images.image_sizes)
        boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in boxes):
            labels = torch.cat([d["labels"] for d in detections])
            logits = self._attribute_logits(features, boxes, labels, images.image_sizes)
            probs = torch.sigmoid(logits.float())
            for detection, part in zip(detections, probs.split([len(b) for b in boxes]), strict=True):
                detection["attributes"] = part
        else:
            for detection in detections:
                detection["attributes"] = torch.zeros(0, self.num_attributes)
        return detections


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Polygons / uncompressed / compressed RLE -> (H, W) uint8 mask (pycocotools)."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def check_annotations(records: list[dict[str, Any]], source: str) -> None:
    """Refuse a training file whose masks pycocotools would misread: a polygon of fewer than 3 points
    (pycocotools takes a 4-number polygon for a box) or an RLE whose size is not the image's or whose runs
    do not cover it. The error names the file, the annotation and its image id (the metric's own GT check,
    ``metrics.fashionpedia.check_segmentation``, with the same rules)."""
    for record in records:
        for ann in record["annotations"]:
            where = f"annotation id {ann.get('id')} (image_id {record['image_id']})"
            height, width = int(record["height"]), int(record["width"])
            fashion_metric.check_segmentation(ann["segmentation"], height, width, False, source, where)


def load_sample(record: dict[str, Any], size: tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]],
                num_attributes: int, jpeg_draft: bool = False):
    """Image resized to ``size`` (or to ``size(original height, width)``) and its Mask R-CNN targets there
    (+ multi-hot ``attributes``); boxes and masks are scaled by the same x / y factors as the image.

    ``jpeg_draft`` (the protocol's ``params.jpeg_draft``): the original size is the record's width / height
    (what the annotations refer to) and a JPEG at least twice the target decodes at 1/2-1/8
    (``resize.load_resized``); masks are rasterised at the original size and resized as without it."""
    stored = record_hw(record) if jpeg_draft else None
    pixels, original = load_resized(record["path"], stored, size, jpeg_draft)
    size = image_hw(pixels)
    boxes, labels, masks, attributes = [], [], [], []
    for ann in record["annotations"]:
        x, y, w, h = ann["bbox"]
        box = scale_boxes(torch.tensor([x, y, x + w, y + h], dtype=torch.float32), original, size)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        mask = decode_segmentation(ann["segmentation"], *original)
        masks.append(resize_mask(mask, size))
        boxes.append(box)
        labels.append(ann["category_id"] + 1)
        hot = torch.zeros(num_attributes)
        hot[list(ann.get("attribute_indices", []))] = 1.0
        attributes.append(hot)
    target = {
        "boxes": torch.stack(boxes) if boxes else torch.zeros(0, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, *size, dtype=torch.uint8),
        "attributes": torch.stack(attributes) if attributes else torch.zeros(0, num_attributes),
    }
    return pixels, target


def record_hw(record: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of a record's image as its annotation file states them."""
    return int(record["height"]), int(record["width"])


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A binary (H, W) mask at ``size`` = (height, width), nearest neighbour (mmdet's mask rescale)."""
    return np.array(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


def flip_target(target: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    flipped = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    flipped["boxes"] = boxes
    flipped["masks"] = target["masks"].flip(-1)
    return flipped


@TASKS.register("fashion", datasets=("fashionpedia",))
class FashionpediaTask(DetectionTask):
    name: ClassVar[str] = "fashion"
    datasets: ClassVar[tuple[str, ...]] = ("fashionpedia",)
    shards_predict: ClassVar[bool] = True  # images detected in shards, both files written by rank 0
    skips_branches: ClassVar[bool] = True  # a step without a box (or a positive) skips the attribute head

    @staticmethod
    def _vocab(data: DatasetSplits) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        categories, attributes = data.meta.get("categories"), data.meta.get("attributes")
        if not categories or attributes is None:
            raise SpecError("fashion task needs reader meta 'categories' and 'attributes'")
        return categories, attributes

    @staticmethod
    def _settings(spec: TaskSpec, protocol: str) -> tuple[FashionHeadParams, LongSideResize | None]:
        """The protocol's head settings and resize rule, validated (a typo names the spec and field)."""
        where = f"tasks/{spec.task}/{spec.dataset}.yaml, protocol {protocol!r}"
        params = validated(FashionHeadParams, head_params(spec, protocol), f"{where}: head params")
        rule = protocol_params(spec, protocol).get("keep_ratio")
        resize = None if rule is None else validated(LongSideResize, rule, f"{where}: params.keep_ratio")
        return params, resize

    @staticmethod
    def _jpeg_draft(spec: TaskSpec, protocol: str) -> bool:
        """The protocol's ``params.jpeg_draft`` (default false): decode JPEG photos at 1/2-1/8 when they
        stay at least the keep-ratio target size. Only the keep-ratio loader reads whole photos at a size
        chosen per image; a protocol without ``keep_ratio`` is refused rather than silently ignored."""
        where = f"tasks/{spec.task}/{spec.dataset}.yaml, protocol {protocol!r}: params.jpeg_draft"
        params = protocol_params(spec, protocol)
        value = params.get("jpeg_draft", False)
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, found {value!r}")
        if value and params.get("keep_ratio") is None:
            raise SpecError(f"{where}: applies to the keep-ratio loader only; this protocol has no "
                            "params.keep_ratio")
        return value

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        protocol = getattr(self, "_protocol", spec.default_protocol)
        params, resize = self._settings(spec, protocol)
        self._jpeg_draft(spec, protocol)  # a bad value fails before any training
        if resize is not None and is_frozen(spec.protocols[protocol].kind):
            raise SpecError(f"tasks/{spec.task}/{spec.dataset}.yaml: protocol {protocol!r} caches backbone "
                            "maps at one input size, so it cannot use params.keep_ratio")
        categories, attributes = self._vocab(data)
        num_levels = 5 if params.pyramid == "p2_p6" else 3
        levels = pyramid_levels(backbone, num_levels)
        channels = level_channels(backbone, levels, (64, 64))
        num_categories = max(int(c["id"]) for c in categories) + 1
        knowledge = None
        if params.attributes.type == "knowledge":
            knowledge = knowledge_matrix(data.splits[spec.splits["train"]], num_categories, len(attributes))
        return FashionModel(channels, backbone.family == "vit", levels, input_size(spec, protocol),
                            num_categories, len(attributes), params, pyramid_strides(backbone, num_levels),
                            knowledge, resize)

    # ---- training -------------------------------------------------------------------------------
    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        assert isinstance(head, FashionModel)
        records, original = self._records(ctx, "train")
        check_annotations(records, ctx.data.meta["gt_files"].get(ctx.spec.splits["train"], "train split"))
        num_attributes = head.num_attributes
        jpeg_draft = self._jpeg_draft(ctx.spec, ctx.protocol)
        plan = plan_fit(ctx, head, len(records))
        if plan.frozen:
            maps = self._cached_maps(ctx, head, records)
            targets = [load_sample(r, head.size, num_attributes)[1] for r in records]
            batches = cached_map_batches(maps, targets, plan, ctx.device)

            def loss_fn(batch) -> torch.Tensor:
                return head.losses(*batch)
        else:
            if head.resize is not None:  # the recipe: a long side drawn per image, aspect kept, padded batch
                batches = keep_ratio_batches(
                    records, lambda r, scale: load_sample(r, lambda hw: long_side_size(hw, scale),
                                                          num_attributes, jpeg_draft),
                    flip_target, head.resize, plan.batch_size, plan.steps_per_epoch, plan.generator,
                    ctx.device, ctx.num_workers)

                def loss_fn(batch) -> torch.Tensor:
                    images, batch_targets, sizes = batch
                    maps = multi_level(ctx.backbone, normalize_padded(unit_float(images), sizes), head.levels)
                    return head.losses(maps, batch_targets, sizes, tuple(images.shape[-2:]))
            else:
                batches = mirrored_batches(
                    records, lambda r: load_sample(r, head.size, num_attributes), flip_target, head.size[1],
                    plan.batch_size, plan.steps_per_epoch, plan.generator, ctx.device, ctx.num_workers,
                )

                def loss_fn(batch) -> torch.Tensor:
                    images, batch_targets = batch
                    return head.losses(multi_level(ctx.backbone, normalize(unit_float(images)), head.levels),
                                       batch_targets)

        info = self._fit_and_count(ctx, head, plan, batches, loss_fn, len(records), original)
        if head.resize is None:
            info["input_size"] = list(head.size)
        else:
            info["input_size"] = {"train_long_side": [int(head.resize.train_scale * r)
                                                      for r in head.resize.ratio_range],
                                  "test_long_side": head.resize.test_scale,
                                  "size_divisor": head.resize.size_divisor, "jpeg_draft": jpeg_draft}
        return info

    def _cached_maps(self, ctx: UnitContext, head: FashionModel, records: list[dict[str, Any]]):
        return cached_level_maps(ctx, head.size, head.levels, records, "fashion")

    # ---- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        assert isinstance(head, FashionModel)
        records, _ = self._records(ctx, "eval")
        _, attributes = self._vocab(ctx.data)
        attribute_ids = [int(a["id"]) for a in attributes]
        with_attributes = set(ctx.data.meta.get("cats_with_attributes", fashion_metric.CATS_WITH_ATTRIBUTES))
        jpeg_draft = self._jpeg_draft(ctx.spec, ctx.protocol)
        ctx.backbone.eval()
        head.eval()
        out = ctx.out_dir / "predictions"

        def detect_share(first: int, stop: int) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
            """Per image of ``records[first:stop]``: its mask and box result entries (top score first)."""
            found_images = []
            for start in range(first, stop, 8):
                chunk = records[start:min(start + 8, stop)]
                if head.resize is None:
                    originals = [load_rgb(r["path"]) for r in chunk]
                    stored = [(im.height, im.width) for im in originals]
                    sizes = [head.size] * len(chunk)
                    images = torch.stack([pil_to_uint8(im, head.size) for im in originals]).to(ctx.device)
                    pixels = normalize(unit_float(images))
                else:  # the recipe's test resize: long side test_scale, aspect kept, padded batch
                    test_size = functools.partial(long_side_size, scale=head.resize.test_scale)
                    loaded = [load_resized(r["path"], record_hw(r) if jpeg_draft else None, test_size,
                                           jpeg_draft) for r in chunk]
                    stored = [hw for _, hw in loaded]
                    resized = [image for image, _ in loaded]
                    sizes = [image_hw(image) for image in resized]
                    images = pad_images(resized, head.resize.size_divisor).to(ctx.device)
                    pixels = normalize_padded(unit_float(images), sizes)
                with autocast(ctx.device, enabled=ctx.amp):
                    maps = multi_level(ctx.backbone, pixels, head.levels)
                found_all = head.detect([m.float() for m in maps], None if head.resize is None else sizes,
                                        tuple(images.shape[-2:]))
                for record, hw, found, size in zip(chunk, stored, found_all, sizes, strict=True):
                    found_images.append(self._result_entries(
                        record, hw, found, size, head.attribute_threshold, attribute_ids, with_attributes))
            return found_images

        def write(found_images: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
            """Both result files (every image in order, as one process writes them) and the overlays."""
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "results_segm.json", [e for segm, _ in found_images for e in segm],
                              indent=None)
            atomic_write_json(out / "results_bbox.json", [e for _, bbox in found_images for e in bbox],
                              indent=None)
            for record, (segm, _) in zip(records[:ctx.visualize], found_images, strict=False):
                instances = [(mask_utils.decode(e["segmentation"]).astype(bool), e["category_id"])
                             for e in segm]
                draw_instances(load_rgb(record["path"]), instances,
                               ctx.out_dir / "vis" / f"{record['image_id']}.png")

        # a data-parallel unit: each rank detects in its contiguous share of the images, rank 0 writes
        parallel.predict_in_shards(len(records), detect_share, write, f"{ctx.spec.key}: detection",
                                   self.prediction_ranks())
        return [out / "results_segm.json", out / "results_bbox.json"]

    @staticmethod
    def _result_entries(record: dict[str, Any], hw: tuple[int, int], found: dict[str, Any],
                        size: tuple[int, int], threshold: float, attribute_ids: list[int],
                        with_attributes: set[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One image's detections in the official formats: mask entries (RLE, no bbox) and box entries,
        each with its category, the attributes over ``threshold`` (categories that carry attributes) and
        the score, in the detector's order; ``found`` at ``size`` is mapped back to the stored ``hw``."""
        boxes = scale_boxes(found["boxes"].float().cpu(), size, hw)
        masks = (paste_masks_in_image(found["masks"].float().cpu(), boxes, hw)[:, 0] > 0.5).numpy()
        segm, bbox = [], []
        columns = (boxes.tolist(), found["labels"].tolist(), found["scores"].tolist(), masks,
                   found["attributes"])
        for box, label, score, mask, probs in zip(*columns, strict=True):
            category = int(label) - 1
            picked = chosen_attributes(probs[None], threshold)[0]
            chosen = [attribute_ids[i] for i in picked] if category in with_attributes else []
            common = {"image_id": record["image_id"], "category_id": category, "attribute_ids": chosen,
                      "score": round(float(score), 5)}
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            segm.append({**common, "segmentation": rle})
            x1, y1, x2, y2 = box
            xywh = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
            bbox.append({**common, "bbox": xywh})
        return segm, bbox

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        records, _ = self._records(ctx, "eval")
        gt_file = ctx.data.meta["gt_files"][ctx.spec.splits["eval"]]
        gt = json.loads(Path(gt_file).read_text())
        keep = {r["image_id"] for r in records}
        gt = copy.copy(gt)
        gt["images"] = [im for im in gt["images"] if im["id"] in keep]
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
        scores: dict[str, float] = {}
        for path, iou_type in zip(predictions, ("segm", "bbox"), strict=True):
            results = json.loads(path.read_text())
            if not results:  # nothing detected: every AP is 0
                continue
            scores.update(fashion_metric.evaluate(copy.deepcopy(gt), results, (iou_type,)))
        for key in ("segm/AP", "segm/iou/AP", "bbox/AP", "bbox/iou/AP"):
            scores.setdefault(key, 0.0)
        return scores


def draw_instances(image: Image.Image, instances: list[tuple[np.ndarray, int]], path: Path,
                   limit_count: int = 20) -> None:
    """Predicted masks blended over the image, one colour per category (top-scoring first)."""
    canvas = np.asarray(image, dtype=np.float32).copy()
    colours = palette(64)
    for mask, category in instances[:limit_count]:
        canvas[mask] = 0.5 * canvas[mask] + 0.5 * colours[(category + 1) % 64]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(path)
