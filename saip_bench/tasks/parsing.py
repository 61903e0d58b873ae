"""Human parsing (LIP): a segmentation head on multi-level backbone features, scored by one-matrix mIoU.

Protocols: ``finetune`` is the authors' SCHP/CE2P recipe (docs/tasks_dense.md, "LIP recipe"): the CE2P
head at stride 4 (``dense/ce2p.py``), 0.5 Lovász + 0.5 CE per parsing output plus a balanced edge loss
(``dense/parsing_losses.py``), aspect-preserving affine crops with scale, rotation and flip
(``dense/affine.py``, params ``affine: true`` and ``augment``), an SGDR schedule, and a multi-scale + flip
test (params ``test_scales``) whose fused logits are warped back to the original image. ``finetune_cpu``
trains backbone + the light multi-level head on anisotropically resized images (random horizontal flip
with left/right class swap); ``frozen`` caches the frozen backbone's features once per split and trains
only that head. Predictions are label PNGs (mode L, raw class ids) at the original image size, named like
the GT, so ``saip-bench metric parsing`` re-scores them. Test-time flip averages logits of the image and
its mirror (left/right class channels swapped back), as SCHP does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.devices import module_device, unit_float
from saip_bench.errors import DataFormatError, SpecError
from saip_bench.metrics.parsing import IGNORE_INDEX, evaluate_pairs, read_label_png
from saip_bench.specs import TaskSpec, stable_hash
from saip_bench.tasks import parallel
from saip_bench.tasks.base import TASKS, Task, UnitContext
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
from saip_bench.tasks.dense.affine import AffineAugment, logits_to_original, warp_image, warp_pair
from saip_bench.tasks.dense.ce2p import CE2PHead, CE2POutput
from saip_bench.tasks.dense.features import (
    backbone_fingerprint,
    head_params,
    input_size,
    multi_level,
    protocol_params,
    resolve_levels,
)
from saip_bench.tasks.dense.features import level_channels as probe_channels
from saip_bench.tasks.dense.parsing_losses import ce2p_loss, lovasz_plan
from saip_bench.tasks.dense.seg_head import SegmentationHead, flip_labels, flip_logits
from saip_bench.tasks.dense.vis import save_part_map
from saip_bench.utils import atomic_open, autocast


class ParsingModel(nn.Module):
    """Backbone levels -> SegmentationHead or CE2PHead; remembers the levels and classes it was built for."""

    def __init__(self, head: SegmentationHead | CE2PHead, levels: list[int], class_names: list[str],
                 flip_pairs: list[list[int]]) -> None:
        super().__init__()
        self.head = head
        self.levels = levels
        self.class_names = class_names
        self.flip_pairs = flip_pairs

    def features(self, backbone: Backbone, images: torch.Tensor) -> list[torch.Tensor]:
        """The levels' maps. A CE2P head with ``token_norms`` on a ViT: each chosen block's output passes
        through the head's new LayerNorm, which also replaces the residual stream there (the recipe's
        ViT); the hooks live only for this call, so the backbone is unchanged for anything else."""
        norms = getattr(self.head, "token_norms", None)
        if norms is None or backbone.family != "vit":
            return multi_level(backbone, normalize(images), self.levels)
        blocks = backbone.body.blocks
        handles = [blocks[level].register_forward_hook(lambda _m, _i, out, n=norm: n(out))
                   for level, norm in zip(self.levels, norms, strict=True)]
        try:
            return multi_level(backbone, normalize(images), self.levels)
        finally:
            for handle in handles:
                handle.remove()

    def outputs(self, backbone: Backbone, images: torch.Tensor) -> torch.Tensor | CE2POutput:
        """Everything the head returns (CE2P: parsing, fused and edge logits) for training."""
        return self.head(self.features(backbone, images))

    def logits(self, backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
        """The prediction's logits (CE2P: the fused ones)."""
        out = self.outputs(backbone, images)
        return out.fused if isinstance(out, CE2POutput) else out

    @property
    def output_stride(self) -> int | None:
        """4 for the CE2P head; None for the multi-level head (its stride is the backbone's)."""
        return 4 if isinstance(self.head, CE2PHead) else None


def class_meta(spec: TaskSpec, data: DatasetSplits) -> tuple[list[str], list[list[int]]]:
    """Class names (reader meta first, else the spec) and left/right flip pairs (spec, else reader meta)."""
    names = list(data.meta.get("class_names") or spec.params.get("class_names") or [])
    if not names:
        raise SpecError(f"{spec.key}: no class names in the reader meta or spec params.class_names")
    pairs = [list(map(int, p)) for p in spec.params.get("flip_pairs", data.meta.get("flip_pairs", []))]
    for pair in pairs:
        if len(pair) != 2 or not all(0 <= c < len(names) for c in pair):
            raise SpecError(f"{spec.key}: flip pair {pair} is not two class ids below {len(names)}")
    return names, pairs


def read_pair(record: dict[str, Any]) -> tuple[Image.Image, np.ndarray]:
    """The image and its label map; a missing label or one whose size differs from the image is a
    DataFormatError naming the label file (every training path reads through here)."""
    image = load_rgb(record["path"])
    if record.get("label_path") is None:
        raise DataFormatError(record["path"], "a training image with a label PNG", "no label_path")
    label = read_label_png(record["label_path"])
    if label.shape != (image.height, image.width):
        raise DataFormatError(record["label_path"], f"a label map of its image's size {image.width}x"
                              f"{image.height}", f"{label.shape[1]}x{label.shape[0]}")
    return image, label


def check_label_size(record: dict[str, Any], image: Image.Image) -> None:
    """An evaluation record's label map must have its image's size (read from the PNG header only): else a
    DataFormatError naming the label file, before any prediction is written against it."""
    if not record.get("label_path"):
        return
    with Image.open(record["label_path"]) as label:
        width, height = label.size
    if (width, height) != (image.width, image.height):
        raise DataFormatError(record["label_path"], f"a label map of its image's size {image.width}x"
                              f"{image.height}", f"{width}x{height}")


def load_pair(record: dict[str, Any], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (3, H, W) uint8 resized bilinearly, label (H, W) uint8 resized by nearest neighbour; the image
    becomes float where it is used (``devices.unit_float``: the same numbers as ``/ 255``)."""
    image, label = read_pair(record)
    resized = Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST)
    return pil_to_uint8(image, size), torch.from_numpy(np.array(resized))


def load_affine_pair(record: dict[str, Any], size: tuple[int, int], scale: float, rotation: float, flip: bool,
                     flip_pairs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's training crop: image (3, H, W) uint8 and label (H, W) uint8 (255 outside the image),
    warped from the whole image by the aspect-preserving affine map (``dense/affine.py``). The image stays
    uint8 through the loader (a quarter of a float crop's bytes: 663 KB vs 2.65 MB at LIP's 576x384); the
    step makes it float on the device (``devices.unit_float``, the same numbers as ``/ 255``)."""
    image, label = read_pair(record)
    crop, crop_label = warp_pair(np.asarray(image), label, size, scale, rotation, flip, flip_pairs)
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1), torch.from_numpy(crop_label)


def to_input_size(logits: torch.Tensor, size: tuple[int, int], stride: int | None) -> torch.Tensor:
    """(B, C, h, w) logits -> (B, C, H, W) for an input of ``size``. With a known output ``stride``, logits
    that cover a padded input (a ViT pads to multiples of 16) are upsampled to the padded size and cut to
    the image; otherwise they are resized to the input size."""
    height, width = size
    if stride is not None and logits.shape[-2] * stride >= height and logits.shape[-1] * stride >= width:
        padded = (logits.shape[-2] * stride, logits.shape[-1] * stride)
        if padded != tuple(logits.shape[-2:]):
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return logits[..., :height, :width]
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def flip_averaged_logits(model: ParsingModel, backbone: Backbone, images: torch.Tensor, flip: bool
                         ) -> torch.Tensor:
    """The single-scale test: logits at the input size, averaged with the mirror's (classes swapped back)."""
    size = (images.shape[-2], images.shape[-1])
    logits = to_input_size(model.logits(backbone, images).float(), size, model.output_stride)
    if flip:
        mirrored = to_input_size(model.logits(backbone, images.flip(-1)).float(), size, model.output_stride)
        logits = (logits + flip_logits(mirrored, model.flip_pairs)) / 2
    return logits


def multi_scale_logits(model: ParsingModel, backbone: Backbone, images: torch.Tensor, scales: list[float],
                       flip: bool) -> torch.Tensor:
    """The recipe's multi-scale test: per scale the images resized (bilinear), the flip-averaged logits
    resized back to the input size; the mean over scales. Scale 1.0 runs the single-scale path as is."""
    size = (images.shape[-2], images.shape[-1])
    total: torch.Tensor | None = None
    for scale in scales:
        if scale == 1.0:
            logits = flip_averaged_logits(model, backbone, images, flip)
        else:
            scaled_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
            scaled = F.interpolate(images, size=scaled_size, mode="bilinear", align_corners=False)
            logits = F.interpolate(flip_averaged_logits(model, backbone, scaled, flip), size=size,
                                   mode="bilinear", align_corners=False)
        total = logits if total is None else total + logits
    assert total is not None
    return total / len(scales)


def parse_test_scales(params: dict[str, Any], where: str) -> list[float] | None:
    """``params.test_scales`` as a list of positive floats, or None when the protocol has none."""
    scales = params.get("test_scales")
    if scales is None:
        return None
    if not isinstance(scales, list) or not scales or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales):
        raise SpecError(f"{where}.test_scales: expected a non-empty list of positive numbers, got {scales!r}")
    return [float(s) for s in scales]


@dataclass(frozen=True)
class DerivedOutputs:
    """Files a task derives from each predicted label map (CIHP: instance parts): ``derive(labels)`` runs
    on the rank that predicted the map, ``write(record, derived)`` on the writer rank, once per image."""

    derive: Callable[[np.ndarray], Any]
    write: Callable[[dict[str, Any], Any], None]


class SegmentationTask(Task):
    """Shared by single- and multi-person parsing: build, fit (two protocols), predict PNGs, score."""

    def run(self, ctx: UnitContext):  # the head's size depends on the protocol
        self._protocol = ctx.protocol
        return super().run(ctx)

    def build_head(self, backbone: Backbone, spec: TaskSpec, data: DatasetSplits) -> nn.Module:
        protocol = getattr(self, "_protocol", spec.default_protocol)
        params = head_params(spec, protocol)
        names, pairs = class_meta(spec, data)
        if params.get("type", spec.head.type) == "ce2p":
            return ParsingModel(*self._ce2p_head(backbone, spec, protocol, params, len(names)), names, pairs)
        levels = resolve_levels(backbone, params.get("levels", 4))
        channels = probe_channels(backbone, levels, (64, 64))
        head = SegmentationHead(channels, len(names), int(params.get("channels", 128)),
                                float(params.get("dropout", 0.1)))
        return ParsingModel(head, levels, names, pairs)

    @staticmethod
    def _ce2p_head(backbone: Backbone, spec: TaskSpec, protocol: str, params: dict[str, Any],
                   num_classes: int) -> tuple[CE2PHead, list[int]]:
        """The CE2P head and its three levels: a ViT's blocks (``levels``: 3 = blocks 4/8/12 of 12), or a
        pyramid's stride-4, stride-8 and last stages."""
        where = f"{spec.key} protocols.{protocol}.params.head"
        if is_frozen(spec.protocols[protocol].kind):
            raise SpecError(f"{where}.type: the CE2P head is built for fine-tuning (the frozen protocols' "
                            "feature cache feeds the multi-level head only); use the multi-level head there")
        known = {"type", "levels", "channels", "context_channels", "low_channels", "edge_channels", "dropout",
                 "bins", "low_upsample", "token_norms"}
        unknown = set(params) - known
        if unknown:
            raise SpecError(f"{where}: unknown keys {sorted(unknown)} for the CE2P head "
                            f"(expected {sorted(known)})")
        if backbone.family == "vit":
            levels = resolve_levels(backbone, params.get("levels", 3))
        else:
            reductions = [stage.reduction for stage in backbone.stages]
            low = min(range(len(reductions)), key=lambda i: (abs(reductions[i] - 4), i))
            middle = min(range(len(reductions)), key=lambda i: (abs(reductions[i] - 8), i))
            levels = [low, middle, len(reductions) - 1]
        if len(levels) != 3:
            raise SpecError(f"{where}.levels: the CE2P head takes three levels, got {levels}")
        probe = 64
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            zeros = torch.zeros(1, 3, probe, probe, device=module_device(backbone))
            maps = multi_level(backbone, zeros, levels)
        backbone.train(was_training)
        low_stride = probe // int(maps[0].shape[-1])
        upsample = str(params.get("low_upsample", "bilinear"))
        if upsample not in ("bilinear", "deconv"):
            raise SpecError(f"{where}.low_upsample: expected 'bilinear' or 'deconv', got {upsample!r}")
        head = CE2PHead(
            [int(m.shape[1]) for m in maps], num_classes, low_stride,
            channels=int(params.get("channels", 256)),
            context_channels=int(params.get("context_channels", 512)),
            low_channels=int(params.get("low_channels", 48)),
            edge_channels=int(params.get("edge_channels", 256)),
            dropout=float(params.get("dropout", 0.1)), bins=tuple(params.get("bins", (1, 2, 3, 6))),
            low_upsample=upsample,  # type: ignore[arg-type]
            token_norms=bool(params.get("token_norms", False)) and backbone.family == "vit",
        )
        return head, levels

    # ---- training -------------------------------------------------------------------------------
    def _train_records(self, ctx: UnitContext) -> tuple[list[dict[str, Any]], int]:
        records = ctx.data.splits[ctx.spec.splits["train"]]
        labelled = [r for r in records if r.get("label_path")]
        return limit(labelled, ctx.max_train_samples, ctx.seed), len(labelled)

    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        assert isinstance(head, ParsingModel)
        records, original = self._train_records(ctx)
        size = input_size(ctx.spec, ctx.protocol)
        frozen = is_frozen(ctx.protocol_spec.kind)
        schedule = ctx.protocol_spec.schedule
        # the test settings are checked before training, not after it
        parse_test_scales(protocol_params(ctx.spec, ctx.protocol),
                          f"{ctx.spec.key} protocols.{ctx.protocol}.params")
        set_backbone_trainable(ctx.backbone, not frozen)
        head.to(ctx.device).train()
        batch_size = min(schedule.batch_size, max(1, len(records)))
        steps_per_epoch = max(1, len(records) // batch_size)
        generator = torch.Generator().manual_seed(ctx.seed)
        if frozen:
            features, labels = self._cached_features(ctx, head, records, size)

            def batches(epoch: int):
                order = torch.randperm(len(records), generator=generator)
                for start in range(0, steps_per_epoch * batch_size, batch_size):
                    index = order[start:start + batch_size]
                    yield [f[index].to(ctx.device) for f in features], labels[index].to(ctx.device)

            def loss_fn(batch) -> torch.Tensor:
                maps, target = batch
                return self._loss(head.head(maps), target)

            model: nn.Module = head
            groups = schedule_param_groups(None, head, schedule)
        else:
            params = protocol_params(ctx.spec, ctx.protocol)
            flip = bool(params.get("train_flip", True))
            where = f"{ctx.spec.key} protocols.{ctx.protocol}.params"
            affine = AffineAugment.from_params(params.get("augment"), where) if params.get("affine") else None

            def pair(key: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor]:
                if affine is not None:
                    index, scale, rotation, mirror = key
                    return load_affine_pair(records[index], size, scale, rotation, mirror, head.flip_pairs)
                image, target = load_pair(records[key[0]], size)
                if key[1]:
                    image, target = image.flip(-1), flip_labels(target[None], head.flip_pairs)[0]
                return image, target

            lovasz_classes = len(head.class_names) if isinstance(head.head, CE2PHead) else None

            def stack(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[Any, ...]:
                """(images, labels), plus for the CE2P loss its Lovász plan (kept pixels, present classes),
                taken from the labels here on the host: on the device it would be a read every step."""
                images, target = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
                if lovasz_classes is None:
                    return images, target
                return images, target, lovasz_plan(target, lovasz_classes, IGNORE_INDEX)

            def epoch_keys(epoch: int):  # the same draws, in the same order, as one process would make
                order = torch.randperm(len(records), generator=generator)
                for start in range(0, steps_per_epoch * batch_size, batch_size):
                    index = order[start:start + batch_size]
                    if affine is not None:  # (index, scale, rotation, flip): drawn here, so every rank agrees
                        yield [(int(i), *affine.draw(generator, flip)) for i in index]
                        continue
                    mirror = (torch.rand(len(index), generator=generator) < 0.5 if flip
                              else torch.zeros(len(index), dtype=torch.bool))
                    yield [(int(i), bool(m)) for i, m in zip(index, mirror, strict=True)]

            batches = epoch_batches(pair, epoch_keys, steps_per_epoch, stack, ctx.num_workers, ctx.device)

            losses = {k: float(v) for k, v in (params.get("loss") or {}).items()}
            unknown = set(losses) - {"lovasz_weight", "ce_weight", "edge_weight"}
            if unknown:
                raise SpecError(f"{where}.loss: unknown keys {sorted(unknown)} (expected lovasz_weight, "
                                "ce_weight, edge_weight)")

            def loss_fn(batch) -> torch.Tensor:
                images, target, *plan = batch
                out = head.outputs(ctx.backbone, unit_float(images))  # uint8 crops from both loaders
                if isinstance(out, CE2POutput):
                    return ce2p_loss([out.parsing, out.fused], out.edge, target, **losses,
                                     ignore_index=IGNORE_INDEX, plan=plan[0] if plan else None)
                return self._loss(out, target)

            model = nn.ModuleDict({"backbone": ctx.backbone, "head": head})
            groups = schedule_param_groups(ctx.backbone, head, schedule)
        info = fit_unit(ctx, model, groups, batches, loss_fn, schedule, steps_per_epoch)
        eval_records, eval_original = self._eval_records(ctx)
        info["n_samples"] = {"train": n_samples(original, len(records)),
                             "eval": n_samples(eval_original, len(eval_records))}
        info["input_size"] = list(size)
        info["parsing_head"] = "ce2p" if isinstance(head.head, CE2PHead) else "multi_level"
        return info

    @staticmethod
    def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, target.long(), ignore_index=IGNORE_INDEX)

    def _cached_features(
        self, ctx: UnitContext, head: ParsingModel, records: list[dict[str, Any]], size: tuple[int, int]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Frozen backbone features of the training images (one pass, cached under ``ctx.cache_dir``)."""

        def compute() -> dict[str, torch.Tensor]:
            ctx.backbone.eval()

            def loader():
                for start in range(0, len(records), 32):
                    yield [load_pair(r, size) for r in records[start:start + 32]]

            def fn(pairs):
                images = unit_float(torch.stack([p[0] for p in pairs]).to(ctx.device))
                maps = multi_level(ctx.backbone, normalize(images), head.levels)
                out = {f"level{i}": m for i, m in enumerate(maps)}
                out["labels"] = torch.stack([p[1] for p in pairs]).float()
                return out

            result = extract(fn, loader(), ctx.amp, ctx.device)
            result["labels"] = result["labels"].to(torch.uint8)
            return result

        key = stable_hash({"task": ctx.spec.key, "backbone": backbone_fingerprint(ctx.backbone),
                           "size": size, "levels": head.levels,
                           "ids": [r["path"] for r in records]})
        result = (cached(ctx.cache_dir / f"parsing-{key}.pt", compute) if ctx.cache_dir is not None
                  else compute())
        features = [result[f"level{i}"] for i in range(len(head.levels))]
        return features, result["labels"]

    # ---- prediction -----------------------------------------------------------------------------
    def _eval_records(self, ctx: UnitContext) -> tuple[list[dict[str, Any]], int]:
        records = [r for r in ctx.data.splits[ctx.spec.splits["eval"]] if r.get("label_path")]
        return limit(records, ctx.max_eval_samples, ctx.seed), len(records)

    @torch.no_grad()
    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        """One label PNG per evaluation image. In a data-parallel unit of a task that ``shards_predict``
        each rank predicts its contiguous share, 16 images a round, and rank 0 receives and writes every
        round's maps (``parallel.predict_in_shards``: the same files and bytes as one process)."""
        assert isinstance(head, ParsingModel)
        records, _ = self._eval_records(ctx)
        size = input_size(ctx.spec, ctx.protocol)
        params = protocol_params(ctx.spec, ctx.protocol)
        flip_test = bool(params.get("flip_test", True))
        affine = bool(params.get("affine", False))
        scales = parse_test_scales(params, f"{ctx.spec.key} protocols.{ctx.protocol}.params")
        ctx.backbone.eval()
        head.eval()
        out_dir = ctx.out_dir / "predictions"
        derived = self._derived_outputs(ctx, records)

        def label_maps(start: int, stop: int) -> list[tuple[int, np.ndarray, Any]]:
            indices = range(start, stop)
            originals = [load_rgb(records[i]["path"]) for i in indices]
            for i, original in zip(indices, originals, strict=True):
                check_label_size(records[i], original)
            if affine or scales is not None:
                maps = self._affine_label_maps(ctx, head, list(indices), originals, size, scales or [1.0],
                                               flip_test, affine)
            else:
                images = unit_float(torch.stack([pil_to_uint8(im, size) for im in originals]).to(ctx.device))
                with autocast(ctx.device, enabled=ctx.amp):
                    logits = head.logits(ctx.backbone, images).float()
                    if flip_test:
                        mirrored = head.logits(ctx.backbone, images.flip(-1)).float()
                        logits = (logits + flip_logits(mirrored, head.flip_pairs)) / 2
                maps = []
                for index, original, logit in zip(indices, originals, logits, strict=True):
                    full = F.interpolate(logit[None], size=(original.height, original.width), mode="bilinear",
                                         align_corners=False)
                    maps.append((index, full[0].argmax(0).to(torch.uint8).cpu().numpy()))
            # derived files (CIHP's instance parts) are computed on the rank that predicted the map
            return [(index, labels, derived.derive(labels) if derived else None) for index, labels in maps]

        def write(maps: list[tuple[int, np.ndarray, Any]]) -> None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for index, labels, extra in maps:
                record = records[index]
                path = out_dir / self._prediction_name(record)
                with atomic_open(path) as handle:
                    Image.fromarray(labels, mode="L").save(handle, format="PNG")
                if derived:
                    derived.write(record, extra)
                if index < ctx.visualize:
                    gt = read_label_png(record["label_path"]) if record.get("label_path") else None
                    save_part_map(load_rgb(record["path"]), labels, gt, len(head.class_names),
                                  ctx.out_dir / "vis" / f"{path.stem}.png")

        parallel.predict_in_shards(len(records), label_maps, write, f"{ctx.spec.key}: prediction",
                                   self.prediction_ranks(), round_size=16)
        return [out_dir / self._prediction_name(record) for record in records]

    def _derived_outputs(self, ctx: UnitContext, records: list[dict[str, Any]]) -> DerivedOutputs | None:
        """Files derived from each predicted label map besides its PNG; None: the PNGs only."""
        return None

    @staticmethod
    def _affine_label_maps(ctx: UnitContext, head: ParsingModel, indices: list[int],
                           originals: list[Image.Image], size: tuple[int, int], scales: list[float],
                           flip: bool, affine: bool) -> list[tuple[int, np.ndarray]]:
        """The recipe's test: each image warped whole into the input (aspect kept), multi-scale + flip
        logits fused at the input size, warped back to the original size by the inverse map (``affine``;
        else the plain anisotropic resize both ways), argmax."""
        if affine:
            crops = [torch.from_numpy(warp_image(np.asarray(im), size)).permute(2, 0, 1) for im in originals]
        else:
            crops = [pil_to_uint8(im, size) for im in originals]
        images = unit_float(torch.stack(crops).to(ctx.device))  # uint8 to the device, a quarter of the bytes
        with autocast(ctx.device, enabled=ctx.amp):
            fused = multi_scale_logits(head, ctx.backbone, images, scales, flip).float()
        maps = []
        for index, original, logits in zip(indices, originals, fused, strict=True):
            if affine:
                full = logits_to_original(logits, size, original.width, original.height)
            else:
                full = F.interpolate(logits[None], size=(original.height, original.width), mode="bilinear",
                                     align_corners=False)[0]
            maps.append((index, full.argmax(0).to(torch.uint8).cpu().numpy()))
        return maps

    @staticmethod
    def _prediction_name(record: dict[str, Any]) -> str:
        label_path = record.get("label_path")
        return Path(label_path).name if label_path else f"{record['id']}.png"

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        records, _ = self._eval_records(ctx)
        names, _ = class_meta(ctx.spec, ctx.data)
        by_name = {p.name: p for p in predictions}
        pairs = [(r["label_path"], by_name[self._prediction_name(r)]) for r in records]
        return evaluate_pairs(pairs, len(names), IGNORE_INDEX, names)


@TASKS.register("parsing", datasets=("lip",))
class ParsingTask(SegmentationTask):
    """LIP single-person parsing: 20 classes, ignore 255, flip pairs 14-15, 16-17, 18-19 (spec)."""

    name: ClassVar[str] = "parsing"
    datasets: ClassVar[tuple[str, ...]] = ("lip",)
    shards_predict: ClassVar[bool] = True  # label maps predicted in shards, written by rank 0 (predict)
