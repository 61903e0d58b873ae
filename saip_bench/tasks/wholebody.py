"""Whole-body pose on COCO-WholeBody (133 points): the top-down pipeline of ``pose`` with the MSRA codec,
scored by xtcocotools per part (body, foot, face, hands, whole body; body area for every part).

Results are written in the official split keys ``keypoints`` (17 body), ``foot_kpts``, ``face_kpts``,
``lefthand_kpts``, ``righthand_kpts`` plus ``score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from saip_bench.metrics.keypoints import split_wholebody, wholebody_ap
from saip_bench.tasks.base import TASKS
from saip_bench.tasks.dense.pose_task import TopDownPoseTask


@TASKS.register("wholebody", datasets=("coco_wholebody",))
class WholeBodyTask(TopDownPoseTask):
    name: ClassVar[str] = "wholebody"
    datasets: ClassVar[tuple[str, ...]] = ("coco_wholebody",)
    layout: ClassVar[str] = "coco_wholebody"

    def result_entry(self, image_id: int, points: np.ndarray, score: float) -> dict[str, Any]:
        return {"image_id": int(image_id), "category_id": 1, **split_wholebody(points), "score": float(score)}

    def evaluate(self, gt_file: Path, results: Path, image_ids: list[int] | None) -> dict[str, float]:
        return wholebody_ap(gt_file, results, image_ids)
