"""Multi-person human parsing (CIHP): the parsing task's segmentation head on whole scenes, plus AP^r.

Semantic part parsing reuses ``tasks.parsing.SegmentationTask`` as is (the ``finetune`` protocol's
SCHP/CE2P recipe, the light multi-level head of the CPU protocols, flip with the left/right swap, frozen
feature cache, label-PNG predictions, one-matrix mIoU); CIHP differs only in its 20 classes (index 10 =
Torso-skin) and scenes with several people. The authors published no CIHP recipe: ``finetune`` applies
their LIP recipe to whole scenes (docs/tasks_dense.md, "CIHP recipe").

Instance-level part predictions (for AP^r, docs/formats.md#cihp-instance-part-apr) are *derived* from the
semantic map, since the
head has no instance branch: every 8-connected component of a predicted part class is one predicted
instance part, scored by its share of the image's pixels (larger parts rank first). This is a documented
baseline, not a person-instance model: parts of touching people merge, and the ranking ignores confidence.
They are written in CIHP_PGN's format (``<id>.png`` instance map, value k = line k of ``<id>.txt``
``<class> <score>``) and scored against ``Instance_ids`` by ``saip_bench.metrics.cihp``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from scipy import ndimage

from saip_bench.metrics import cihp as cihp_metric
from saip_bench.tasks.base import TASKS, UnitContext
from saip_bench.tasks.parsing import DerivedOutputs, SegmentationTask
from saip_bench.utils import atomic_open, atomic_write_text


def instances_from_semantic(labels: np.ndarray, num_classes: int = cihp_metric.NUM_CLASSES,
                            min_pixels: int = 4) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Semantic label map -> (instance map, [(class, score)]) with value k+1 for the k-th instance."""
    instances = np.zeros(labels.shape, dtype=np.int32)
    listed: list[tuple[int, float]] = []
    structure = np.ones((3, 3), dtype=bool)
    for cls in range(1, num_classes):
        components, count = ndimage.label(labels == cls, structure=structure)
        for index in range(1, count + 1):
            mask = components == index
            pixels = int(mask.sum())
            if pixels < min_pixels:
                continue
            listed.append((cls, pixels / labels.size))
            instances[mask] = len(listed)
    return instances, listed


def write_instances(instances: np.ndarray, listed: list[tuple[int, float]], png: Path) -> None:
    """CIHP_PGN prediction files, each written atomically; 16-bit PNG when more than 255 instances."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(png) as handle:
        if len(listed) > 255:
            Image.fromarray(instances.astype(np.uint16)).save(handle, format="PNG")
        else:
            Image.fromarray(instances.astype(np.uint8), mode="L").save(handle, format="PNG")
    atomic_write_text(png.with_suffix(".txt"), "".join(f"{c} {s:.6f}\n" for c, s in listed))


@TASKS.register("multi_parsing", datasets=("cihp",))
class MultiPersonParsingTask(SegmentationTask):
    """CIHP: 20 classes, ignore 255, flip pairs 14-15, 16-17, 18-19 (spec); mIoU + derived AP^r."""

    name: ClassVar[str] = "multi_parsing"
    datasets: ClassVar[tuple[str, ...]] = ("cihp",)
    shards_predict: ClassVar[bool] = True  # maps and their instance parts in shards, written by rank 0

    def _derived_outputs(self, ctx: UnitContext, records: list[dict[str, Any]]) -> DerivedOutputs | None:
        """The instance parts of each predicted map (derived on the rank that predicted it, written by
        the writer rank beside the semantic PNGs), when every evaluated image has instance GT."""
        if not all(r.get("instance_path") for r in records):
            return None
        folder = ctx.out_dir / "predictions_instances"
        return DerivedOutputs(
            derive=instances_from_semantic,
            write=lambda record, parts: write_instances(*parts, folder / f"{record['id']}.png"))

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        scores = super().score(ctx, predictions)
        records, _ = self._eval_records(ctx)
        folder = ctx.out_dir / "predictions_instances"
        if records and all(r.get("instance_path") for r in records) and folder.is_dir():
            images = []
            for record in records:
                gt_map = cihp_metric.read_map(record["instance_path"])
                pred_map, preds = cihp_metric.pred_parts(folder / f"{record['id']}.png")
                images.append((gt_map, cihp_metric.gt_parts(record["instance_path"], record["label_path"]),
                               pred_map, preds))
            scores.update(cihp_metric.instance_ap(images))
        return scores
