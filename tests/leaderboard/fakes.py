"""Hand-made records for board tests."""

from __future__ import annotations

from saip_bench.specs import ResultRecord

COST = {"params_m": 5.5, "gflops": 1.2, "latency_ms": 4.0, "wall_s": 1.0}
# Different models cost different amounts: the Pareto plot is drawn only when costs differ.
METHOD_COST = {
    "saip": COST,
    "dino": {"params_m": 5.7, "gflops": 1.3, "latency_ms": 5.0, "wall_s": 1.0},
    "mae": {"params_m": 6.0, "gflops": 1.1, "latency_ms": 3.0, "wall_s": 1.0},
}


def rec(
    method: str,
    dataset: str,
    score: float,
    seed: int = 0,
    backbone: str = "vit_tiny",
    direction: str = "max",
    metric: str = "rank1",
    planned=(0,),
    limited: bool = False,
    source: str = "synthetic",
    track: str = "fast",
    extra: dict | None = None,
    task: str | None = None,
    cost: dict | None = None,
    half_width: float | None = None,
) -> ResultRecord:
    """A record; ``half_width`` adds a bootstrap interval score ± half_width for every score."""
    scores = {metric: score, **(extra or {})}
    uncertainty = None
    if half_width is not None:
        uncertainty = {"method": "percentile bootstrap", "level": 0.95, "resamples": 1000, "seed": seed,
                       "unit": "queries", "n_units": 100,
                       "intervals": {k: [v - half_width, v + half_width] for k, v in scores.items()}}
    return ResultRecord.model_validate(
        {
            "identity": {
                "method": method,
                "backbone": backbone,
                "task": task or f"task_{dataset}",
                "dataset": dataset,
                "protocol": "linear",
                "seed": seed,
            },
            "scores": scores,
            "main_metric": metric,
            "main_score": score,
            "direction": direction,
            "provenance": {
                "track": track,
                "data": {"source": source, "fingerprint": f"fp-{dataset}"},
                "pretrain": {"preset": "quick"},
                "seeds": {"planned": list(planned)},
            },
            "cost": cost or COST,
            "limited": limited,
            "uncertainty": uncertainty,
        }
    )


def three_methods(seeds=(0,), half_width: float | None = None) -> list[ResultRecord]:
    """saip best on market (max), dino best on crowdhuman (min: lower MR is better)."""
    table = {
        "saip": {"market1501": 90.0, "crowdhuman": 50.0, "lip": 40.0},
        "dino": {"market1501": 80.0, "crowdhuman": 40.0, "lip": 30.0},
        "mae": {"market1501": 70.0, "crowdhuman": 60.0, "lip": 30.0},
    }
    out = []
    for method, scores in table.items():
        for dataset, score in scores.items():
            for seed in seeds:
                direction = "min" if dataset == "crowdhuman" else "max"
                metric = {"market1501": "rank1", "crowdhuman": "mMR", "lip": "mIoU"}[dataset]
                out.append(
                    rec(
                        method,
                        dataset,
                        score + seed,
                        seed=seed,
                        direction=direction,
                        metric=metric,
                        planned=seeds,
                        extra={"aux": score / 2},
                        cost=METHOD_COST[method],
                        half_width=half_width,
                    )
                )
    return out


def from_files(records: list[ResultRecord], folder) -> list[ResultRecord]:
    """The records written as JSON files under ``folder`` and loaded back the way the commands load them
    (so each knows its file, as boards need for their links)."""
    import json
    from pathlib import Path

    from saip_bench.bench.store import load_records

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        ident = record.identity
        track = record.provenance["track"]
        name = f"{ident.method}__{ident.backbone}__{ident.dataset}__{track}__seed{ident.seed}"
        (folder / f"{name}.json").write_text(json.dumps(record.model_dump(mode="json")))
    return load_records([folder])
