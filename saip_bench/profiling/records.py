"""Profile results as result records, so boards can put cost columns beside accuracy."""

from __future__ import annotations

import datetime
from pathlib import Path

from saip_bench.profiling.core import ProfileResult
from saip_bench.specs import ResultRecord, stable_hash
from saip_bench.utils import atomic_write_json, file_sha256

PROFILE_TASK = "profile"


def profile_record(result: ProfileResult, checkpoint: str | None = None) -> ResultRecord:
    """Identity: method '-' (cost does not depend on pretraining), task 'profile', dataset = input size."""
    scores = result.scores()
    main = "latency_ms_eager_b1" if "latency_ms_eager_b1" in scores else "gflops"
    return ResultRecord(
        identity={
            "method": "-", "backbone": result.name, "task": PROFILE_TASK,
            "dataset": f"{result.img_size[0]}x{result.img_size[1]}", "protocol": "cpu", "seed": 0,
        },
        scores=scores,
        main_metric=main,
        main_score=scores[main],
        direction="min",
        provenance={
            "environment": result.environment,
            "threads": result.threads,
            "checkpoint_hash": file_sha256(checkpoint) if checkpoint else None,
            "config_hash": stable_hash({"engines": sorted(result.latency), "img_size": result.img_size}),
            "onnx_max_abs_diff": result.onnx_max_abs_diff,
        },
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def write_profile_record(
    result: ProfileResult, record_dir: str | Path, checkpoint: str | None = None
) -> Path:
    record = profile_record(result, checkpoint)
    identity = record.identity
    path = Path(record_dir) / f"profile__{identity.backbone}__{identity.dataset}.json"
    atomic_write_json(path, record.model_dump(mode="json"))
    return path
