"""2D human pose on COCO keypoints: top-down heatmaps (UDP codec, 256x192), scored by pycocotools OKS AP.

The results JSON is the official ``[{image_id, category_id, keypoints: [x, y, score] * 17, score}]``;
``box_source`` (GT boxes by default, or a detection results file) is recorded with every unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from saip_bench.metrics.keypoints import coco_keypoint_ap
from saip_bench.tasks.base import TASKS
from saip_bench.tasks.dense.pose_task import TopDownPoseTask


@TASKS.register("pose", datasets=("coco",))
class PoseTask(TopDownPoseTask):
    name: ClassVar[str] = "pose"
    datasets: ClassVar[tuple[str, ...]] = ("coco",)
    layout: ClassVar[str] = "coco"

    def result_entry(self, image_id: int, points: np.ndarray, score: float) -> dict[str, Any]:
        return {"image_id": int(image_id), "category_id": 1,
                "keypoints": np.asarray(points, dtype=float).reshape(-1).tolist(), "score": float(score)}

    def evaluate(self, gt_file: Path, results: Path, image_ids: list[int] | None) -> dict[str, float]:
        return coco_keypoint_ap(gt_file, results, image_ids)
