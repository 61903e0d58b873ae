"""Top-down heatmap pose estimation shared by COCO keypoints (17) and COCO-WholeBody (133).

Protocols: ``finetune`` trains backbone + deconv head on augmented crops (mmpose's flip, half-body and
scale/rotation/shift); ``frozen`` caches the frozen backbone's features of un-augmented GT-box crops once
and trains the head only. Prediction crops each person box (GT boxes by default, or a detection results
file: ``box_source``), averages the heatmaps of the crop and its mirror (flip test), decodes with the
codec, rescores (box score x mean confident keypoint score) and applies OKS-NMS per image as mmpose's
``CocoMetric`` does, then writes the official results JSON that ``saip-bench metric`` re-scores.

Fine-tune batches carry uint8 crops and keypoints in heatmap coordinates; the float images and the heatmap
targets are made on the device (``heatmap_targets``), equal to mmpose's encoders: the loader then moves
~150 KB a sample instead of 0.8 MB (COCO) or 2.2 MB (whole body) (benchmarks/pose_loader.py). With
``params.crops_on_device`` (``auto``, the default, means on a CUDA device; ``true``/``false`` force it) the
crops themselves are made there too: workers read the photo's bytes and run mmpose's transforms on no
pixels, the device decodes the batch and warps every crop (``device_crops``), within one grey level of
cv2's warp. CPU runs keep the workers' crops, so their numbers do not depend on the setting.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import to_device, unit_float
from saip_bench.errors import DataFormatError, UserError
from saip_bench.specs import TaskSpec, stable_hash
from saip_bench.tasks import parallel
from saip_bench.tasks.base import Task, UnitContext
from saip_bench.tasks.common import (
    build_optimizer,
    cached,
    epoch_batches,
    extract,
    fit_loop,
    is_frozen,
    limit,
    load_rgb,
    n_samples,
    normalize,
    schedule_param_groups,
    set_backbone_trainable,
)
from saip_bench.tasks.dense.device_crops import decode_images, read_bytes, warp_crops
from saip_bench.tasks.dense.features import (
    backbone_fingerprint,
    head_params,
    input_size,
    level_channels,
    multi_level,
    protocol_params,
    resolve_levels,
)
from saip_bench.tasks.dense.heatmap_head import DeconvHeatmapHead, keypoint_mse
from saip_bench.tasks.dense.heatmap_targets import render_heatmaps
from saip_bench.tasks.dense.topdown import (
    PoseMeta,
    TopDownPipeline,
    build_codec,
    codec_config,
    decode_to_image,
    detected_instances,
    flip_back,
    gt_instances,
    oks_nms_per_image,
    pose_meta,
    rescore,
)
from saip_bench.tasks.dense.vis import save_skeletons
from saip_bench.utils import atomic_write_text, autocast


class PoseModel(nn.Module):
    """One backbone level -> deconvolution heatmap head."""

    def __init__(self, head: DeconvHeatmapHead, levels: list[int], meta: PoseMeta) -> None:
        super().__init__()
        self.head = head
        self.levels = levels
        self.meta = meta

    def feature(self, backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
        return multi_level(backbone, normalize(images), self.levels)[0]


def heatmap_size(codec: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of the codec's heatmaps (the head's output size)."""
    width, height = codec["heatmap_size"]
    return int(height), int(width)


def pose_description(spec: TaskSpec, protocol: str, meta: PoseMeta, levels: list[int]) -> dict[str, Any]:
    """The prediction settings of a pose unit as plain JSON (kept beside fine-tuned weights)."""
    settings = TopDownPoseTask.settings(spec, protocol)
    return {"spec": spec.key, "protocol": protocol, "layout": meta.name, "num_keypoints": meta.num_keypoints,
            "input_size": list(settings["input_size"]), "codec": json.loads(json.dumps(settings["codec"])),
            "flip_test": settings["flip_test"], "levels": [int(i) for i in levels],
            "final_norm": bool(spec.protocols[protocol].final_norm)}


@lru_cache(maxsize=16)
def _image_array(path: str) -> np.ndarray:
    return np.asarray(load_rgb(path))


def _crops_on_device_setting(spec: TaskSpec, protocol: str, value: Any) -> str | bool:
    """``params.crops_on_device``: ``auto`` (the default: on a CUDA device only), ``true`` or ``false``."""
    if not (value == "auto" or isinstance(value, bool)):
        raise UserError(f"tasks/{spec.task}/{spec.dataset}.yaml, protocol {protocol!r}: "
                        f"params.crops_on_device must be auto, true or false, not {value!r}")
    return value


def resolve_crops_on_device(setting: str | bool, device: torch.device | str) -> bool:
    """``auto`` decodes and warps on the device where that is where the time is saved: a CUDA GPU (nvJPEG,
    and the loader workers freed of ~4 of ~5 ms a sample). On a CPU the workers' cv2 path stays, so CPU
    numbers do not depend on the setting."""
    if setting == "auto":
        return torch.device(device).type == "cuda"
    return bool(setting)


def _photo_header(path: str, blob: torch.Tensor) -> tuple[int, int]:
    """(height, width) from the file's header (no pixels decoded); a file PIL cannot identify is named."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob.numpy().tobytes())) as image:
            return int(image.height), int(image.width)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataFormatError(path, "a readable image", f"{type(exc).__name__}: {exc}") from exc


def device_crop_batches(
    pipeline: TopDownPipeline, instances: list[dict[str, Any]], epoch_keys: Any, steps_per_epoch: int,
    ctx: UnitContext,
) -> Any:
    """``batches(epoch)`` whose crops are made on ``ctx.device``: a loader worker reads a photo's bytes and
    runs mmpose's transforms on no pixels (``TopDownPipeline(image=None)``); the device decodes the batch
    and warps every crop (``device_crops``). Done before the step, so ``fit_loop`` counts it as data wait.
    Why: decoding a whole photo in a worker was most of a pose sample's cost, and the workers of one GPU
    could not keep up with it (docs/performance.md)."""
    device = torch.device(ctx.device)

    def geometry(key: tuple[int, int]) -> dict[str, Any]:
        i, epoch = key
        path = instances[i]["path"]
        blob = read_bytes(path)
        sample = pipeline(instances[i], None, seed=ctx.seed * 1_000_003 + epoch * 100_003 + i,
                          image_hw=_photo_header(path, blob))
        return {"blob": blob, "index": i, **{k: sample[k] for k in ("matrix", "flip", "points", "visible")}}

    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"blobs": [s["blob"] for s in samples], "indices": [s["index"] for s in samples],
                **{k: torch.stack([s[k] for s in samples]) for k in ("matrix", "flip", "points", "visible")}}

    loaded = epoch_batches(geometry, epoch_keys, steps_per_epoch, collate, ctx.num_workers, device,
                           move=False)

    def batches(epoch: int) -> Any:
        for batch in loaded(epoch):
            photos = decode_images(batch["blobs"], [instances[i]["path"] for i in batch["indices"]], device)
            crops = warp_crops(photos, batch["matrix"], batch["flip"], pipeline.input_hw)
            yield crops, to_device(batch["points"], device), to_device(batch["visible"], device)

    batches.replays_skipped_epochs = loaded.replays_skipped_epochs  # type: ignore[attr-defined]
    batches.data_parallel = loaded.data_parallel  # type: ignore[attr-defined]
    return batches


class TopDownPoseTask(Task):
    """Subclasses set ``layout`` (mmpose meta name) and implement ``result_entry`` / ``evaluate``."""

    layout: ClassVar[str]
    shards_predict: ClassVar[bool] = True  # instances decoded in shards and gathered (predict)
    selections: ClassVar[tuple[str, ...]] = ("final", "best_test")  # predict + score is one val pass
    # fine-tune targets rendered on the device from keypoints (heatmap_targets); False: mmpose's
    # GenerateTarget in the loader workers, the reference the tests compare the renderer's path with
    device_targets: ClassVar[bool] = True

    # -- hooks ------------------------------------------------------------------------------------
    @abstractmethod
    def result_entry(self, image_id: int, points: np.ndarray, score: float) -> dict[str, Any]:
        """One entry of the official results JSON for one person."""

    @abstractmethod
    def evaluate(self, gt_file: Path, results: Path, image_ids: list[int] | None) -> dict[str, float]:
        """The official metric on the results file."""

    # -- settings ---------------------------------------------------------------------------------
    def run(self, ctx: UnitContext):  # the head's size depends on the protocol
        self._protocol = ctx.protocol
        return super().run(ctx)

    @staticmethod
    def settings(spec: TaskSpec, protocol: str) -> dict[str, Any]:
        params = protocol_params(spec, protocol)
        size = input_size(spec, protocol)
        codec = codec_config(str(params.get("codec", "udp")), size, float(params.get("sigma", 2.0)))
        box_source = str(params.get("box_source", "gt"))
        if box_source not in ("gt", "detections"):
            raise UserError(f"{spec.key}: box_source must be 'gt' or 'detections', not {box_source!r}")
        return {
            "input_size": size,
            "codec": codec,
            "flip_test": bool(params.get("flip_test", True)),
            "train_augment": bool(params.get("train_augment", True)),
            "box_source": box_source,
            "detection_file": params.get("detection_file"),
            "detection_score_threshold": float(params.get("detection_score_threshold", 0.0)),
            "nms_threshold": float(params.get("nms_threshold", 0.9)),
            "keypoint_score_threshold": float(params.get("keypoint_score_threshold", 0.2)),
            "crops_on_device": _crops_on_device_setting(spec, protocol,
                                                        params.get("crops_on_device", "auto")),
        }

    def finetuned_meta(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        """``--keep-finetuned``: how to predict with the kept weights (``saip-bench data keypoints``)."""
        assert isinstance(head, PoseModel)
        return {"pose": pose_description(ctx.spec, ctx.protocol, head.meta, head.levels)}

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        protocol = getattr(self, "_protocol", spec.default_protocol)
        params = head_params(spec, protocol)
        meta = pose_meta(self.layout)
        levels = resolve_levels(backbone, [int(params.get("level", -1))])
        channels = level_channels(backbone, levels, (64, 64))[0]
        codec = self.settings(spec, protocol)["codec"]
        bias_hw = heatmap_size(codec) if params.get("position_bias") else None
        head = DeconvHeatmapHead(channels, meta.num_keypoints, params.get("deconv_channels", [256, 256]),
                                 position_bias_hw=bias_hw)
        return PoseModel(head, levels, meta)

    # -- training ---------------------------------------------------------------------------------
    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        assert isinstance(head, PoseModel)
        settings = self.settings(ctx.spec, ctx.protocol)
        size = settings["input_size"]
        all_records = ctx.data.splits[ctx.spec.splits["train"]]
        records = limit(all_records, ctx.max_train_samples, ctx.seed)
        instances = gt_instances(records, head.meta.num_keypoints, train=True)
        if not instances:
            raise UserError(f"{ctx.spec.key}: no labelled person in the training split")
        frozen = is_frozen(ctx.protocol_spec.kind)
        schedule = ctx.protocol_spec.schedule
        set_backbone_trainable(ctx.backbone, not frozen)
        head.to(ctx.device).train()
        heatmap_hw = heatmap_size(settings["codec"])
        batch_size = min(schedule.batch_size, len(instances))
        steps_per_epoch = max(1, len(instances) // batch_size)
        generator = torch.Generator().manual_seed(ctx.seed)

        def order_batches():
            order = torch.randperm(len(instances), generator=generator)
            for start in range(0, steps_per_epoch * batch_size, batch_size):
                yield order[start:start + batch_size]

        if frozen:
            cache = self._cached_crops(ctx, head, instances, settings)

            def batches(epoch: int):
                for index in order_batches():
                    yield (cache["features"][index].to(ctx.device), cache["heatmaps"][index].to(ctx.device),
                           cache["weights"][index].to(ctx.device))

            def loss_fn(batch) -> torch.Tensor:
                features, target, weights = batch
                return keypoint_mse(head.head(features, heatmap_hw), target, weights)

            model: nn.Module = head
            groups = schedule_param_groups(None, head, schedule)
        else:
            codec = settings["codec"]
            on_device = self.device_targets
            crops_on_device = resolve_crops_on_device(settings["crops_on_device"], ctx.device)
            if crops_on_device and not on_device:
                raise UserError(f"{ctx.spec.key}: crops_on_device needs the device-rendered targets")
            pipeline = TopDownPipeline(head.meta, size, codec, train=True, augment=settings["train_augment"],
                                       compact=on_device)
            fields = ("image", "points", "visible") if on_device else ("image", "heatmaps", "weights")

            def crop(key: tuple[int, int]) -> dict[str, torch.Tensor]:
                i, epoch = key
                return pipeline(instances[i], _image_array(instances[i]["path"]),
                                seed=ctx.seed * 1_000_003 + epoch * 100_003 + i)

            def stack(crops: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
                return tuple(torch.stack([c[k] for c in crops]) for k in fields)

            def epoch_keys(epoch: int):
                return ([(int(i), epoch) for i in index] for index in order_batches())

            if crops_on_device:
                batches = device_crop_batches(pipeline, instances, epoch_keys, steps_per_epoch, ctx)
            else:
                batches = epoch_batches(crop, epoch_keys, steps_per_epoch, stack, ctx.num_workers, ctx.device)

            def loss_fn(batch) -> torch.Tensor:
                images, *labels = batch
                if on_device:  # uint8 crops and keypoints -> the float images and targets of the old path
                    images = unit_float(images)
                    target, weights = render_heatmaps(labels[0], labels[1], codec)
                else:
                    target, weights = labels
                heatmaps = head.head(head.feature(ctx.backbone, images), heatmap_hw)
                return keypoint_mse(heatmaps, target, weights)

            model = nn.ModuleDict({"backbone": ctx.backbone, "head": head})
            groups = schedule_param_groups(ctx.backbone, head, schedule)
        optimizer = build_optimizer(groups, schedule)
        info = fit_loop(model, batches, loss_fn, schedule, optimizer, steps_per_epoch, ctx.amp, ctx.device,
                        description=f"{ctx.spec.key} {ctx.protocol}", show_progress=ctx.show_progress,
                        checkpoint=ctx.fit_checkpoint,
                        on_epoch_end=ctx.epoch_end)
        eval_records, eval_original = self._eval_records(ctx)
        info["n_samples"] = {"train": n_samples(len(all_records), len(records)),
                             "eval": n_samples(eval_original, len(eval_records))}
        info["train_instances"] = len(instances)
        info["box_source"] = settings["box_source"]
        info["input_size"] = list(size)
        info["codec"] = settings["codec"]["type"]
        if not frozen:
            info["crops_made_on"] = "device" if crops_on_device else "loader workers"
        return info

    def _cached_crops(
        self, ctx: UnitContext, head: PoseModel, instances: list[dict[str, Any]], settings: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Frozen protocol: backbone features + targets of un-augmented crops, computed once."""
        pipeline = TopDownPipeline(head.meta, settings["input_size"], settings["codec"], train=True,
                                   augment=False)

        def compute() -> dict[str, torch.Tensor]:
            ctx.backbone.eval()

            def loader():
                for start in range(0, len(instances), 32):
                    yield [pipeline(inst, _image_array(inst["path"])) for inst in instances[start:start + 32]]

            def fn(crops):
                images = torch.stack([c["image"] for c in crops]).to(ctx.device)
                return {"features": head.feature(ctx.backbone, images),
                        "heatmaps": torch.stack([c["heatmaps"] for c in crops]),
                        "weights": torch.stack([c["weights"] for c in crops])}

            return extract(fn, loader(), ctx.amp, ctx.device)

        key = stable_hash({"task": ctx.spec.key, "backbone": backbone_fingerprint(ctx.backbone),
                           "size": settings["input_size"], "levels": head.levels,
                           "codec": settings["codec"],
                           "instances": [(i["path"], i["bbox"]) for i in instances]})
        if ctx.cache_dir is None:
            return compute()
        return cached(ctx.cache_dir / f"{self.name}-{key}.pt", compute)

    # -- prediction -------------------------------------------------------------------------------
    def _eval_records(self, ctx: UnitContext) -> tuple[list[dict[str, Any]], int]:
        records = ctx.data.splits[ctx.spec.splits["eval"]]
        return limit(records, ctx.max_eval_samples, ctx.seed), len(records)

    def _eval_instances(self, ctx: UnitContext, records: list[dict[str, Any]], meta: PoseMeta,
                        settings: dict[str, Any]) -> list[dict[str, Any]]:
        if settings["box_source"] == "gt":
            return gt_instances(records, meta.num_keypoints, train=False)
        split = ctx.spec.splits["eval"]
        detection_file = settings["detection_file"] or ctx.data.meta.get("detection_files", {}).get(split)
        if not detection_file:
            raise UserError(f"{ctx.spec.key}: box_source 'detections' needs params.detection_file (or a "
                            f"detection file found by the reader for split {split!r})")
        path = Path(detection_file)
        path = path if path.is_absolute() else Path(ctx.data.root) / path
        return detected_instances(records, path, meta.num_keypoints, settings["detection_score_threshold"])

    @torch.no_grad()
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        assert isinstance(head, PoseModel)
        settings = self.settings(ctx.spec, ctx.protocol)
        size = settings["input_size"]
        records, _ = self._eval_records(ctx)
        instances = self._eval_instances(ctx, records, head.meta, settings)
        pipeline = TopDownPipeline(head.meta, size, settings["codec"], train=False, augment=False)
        codec = build_codec(settings["codec"])
        shift = settings["codec"]["type"] != "UDPHeatmap"
        heatmap_hw = heatmap_size(settings["codec"])
        ctx.backbone.eval()
        head.eval()
        out_dir = ctx.out_dir / "predictions"
        split = ctx.spec.splits["eval"]
        path = out_dir / f"{self.name}_{split}_results_{settings['box_source']}-boxes.json"

        def predict_share(first: int, stop: int) -> list[dict[str, Any]]:
            share: list[dict[str, Any]] = []
            for start in range(first, stop, 32):
                chunk = instances[start:min(start + 32, stop)]
                crops = [pipeline(inst, _image_array(inst["path"])) for inst in chunk]
                images = torch.stack([c["image"] for c in crops]).to(ctx.device)
                with autocast(ctx.device, enabled=ctx.amp):
                    heatmaps = head.head(head.feature(ctx.backbone, images), heatmap_hw).float()
                    if settings["flip_test"]:
                        mirrored = head.head(head.feature(ctx.backbone, images.flip(-1)), heatmap_hw).float()
                        heatmaps = (heatmaps + flip_back(mirrored, head.meta.flip_indices, shift)) / 2
                for inst, crop, maps in zip(chunk, crops, heatmaps.cpu().numpy(), strict=True):
                    points, scores = decode_to_image(codec, maps, crop["center"], crop["scale"], size)
                    score = rescore(scores, inst["bbox_score"], settings["keypoint_score_threshold"])
                    triples = np.concatenate([points, scores[:, None]], axis=1)
                    share.append({"image_id": inst["image_id"], "score": score, "_points": triples,
                                  "_area": float(np.prod(crop["scale"])), "_bbox": inst["bbox"]})
            return share

        def write(predictions: list[dict[str, Any]]) -> None:
            """All instances in order (a single process's NMS and results file), on the writer rank."""
            kept = oks_nms_per_image(predictions, head.meta.sigmas, settings["nms_threshold"])
            results = [self.result_entry(p["image_id"], p["_points"], p["score"]) for p in kept]
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(results))
            if ctx.visualize:
                self._visualize(ctx, records, kept, head.meta)

        # a data-parallel unit: each rank decodes its contiguous share of the instances
        parallel.predict_in_shards(len(instances), predict_share, write, f"{ctx.spec.key}: pose prediction",
                                   self.prediction_ranks())
        return [path]

    def _visualize(self, ctx: UnitContext, records: list[dict[str, Any]], kept: list[dict[str, Any]],
                   meta: PoseMeta) -> None:
        from PIL import Image

        for record in records[:ctx.visualize]:
            people = [p for p in kept if p["image_id"] == record["image_id"]]
            save_skeletons(Image.fromarray(_image_array(record["path"])), [p["_points"] for p in people],
                           meta.skeleton, ctx.out_dir / "vis" / f"{self.name}_{record['image_id']}.png",
                           boxes=[p["_bbox"] for p in people])

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        split = ctx.spec.splits["eval"]
        gt_file = ctx.data.meta.get("gt_files", {}).get(split)
        if not gt_file:
            raise UserError(f"{ctx.spec.key}: the reader gave no official GT file for split {split!r} "
                            "(DatasetSplits.meta['gt_files'])")
        records, original = self._eval_records(ctx)
        image_ids = None if len(records) == original else [r["image_id"] for r in records]
        return self.evaluate(Path(gt_file), predictions[0], image_ids)

