"""Text-to-image person retrieval: R@1/5/10, mAP, mINP exactly as
docs/formats.md#text-to-image-retrieval-metrics (IRRA ``rank``).

Every text query is ranked against every gallery image by descending similarity; a match is an image
of the same pid. No camera or junk filtering and no skipping: all queries are in every denominator (a
query whose pid has no gallery image, impossible in the official splits, scores 0 everywhere instead of
the NaN the reference would produce). Ties are broken by gallery order (a stable sort). Scores are
percentages (x100, as IRRA prints them). Ranks of the positives come from the same
``positive_ranks`` as ReID (no full argsort).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, load_prediction_npz, register_metric_command
from saip_bench.metrics.reid import (
    GroupIndex,
    as_float_matrix,
    as_id_vector,
    positive_ranks,
    rank_summary,
)

if TYPE_CHECKING:
    import torch

RANKS = (1, 5, 10)


def evaluate_retrieval(
    similarity: Any,
    text_pids: Any,
    image_pids: Any,
    source: str = "<arrays>",
) -> dict[str, float]:
    """R@1/5/10, mAP, mINP (percent) from a (T, I) similarity matrix (larger = closer)."""
    sim = as_float_matrix("similarity", similarity, source).numpy()
    num_t, num_i = sim.shape
    if num_t == 0 or num_i == 0:
        raise UserError(f"{source}: retrieval needs at least one text query and one gallery image")
    tp = as_id_vector("text_pids", text_pids, num_t, source)
    ip = as_id_vector("image_pids", image_pids, num_i, source)
    index = GroupIndex(ip)
    first = np.full(num_t, -1)
    aps, inps = np.zeros(num_t), np.zeros(num_t)
    for i in range(num_t):
        same = index.members(int(tp[i]))
        if same.size:  # a caption whose pid has no image scores 0 (kept in every denominator)
            first[i], aps[i], inps[i] = rank_summary(positive_ranks(-sim[i], same, same))
    found = first >= 0
    result = {f"R{k}": 100.0 * float(np.mean(found & (first < k))) for k in RANKS}
    result["mAP"] = 100.0 * float(np.mean(aps))
    result["mINP"] = 100.0 * float(np.mean(inps))
    result["num_queries"] = float(num_t)
    result["num_queries_without_match"] = float(np.sum(~found))
    if bootstrap.active():
        values = {f"R{k}": 100.0 * (found & (first < k)) for k in RANKS} | {"mAP": 100.0 * aps,
                                                                              "mINP": 100.0 * inps}
        bootstrap.offer("queries", num_t, bootstrap.ratio_statistic(values))
    return result


def evaluate_retrieval_file(path: str | Path) -> dict[str, float]:
    arrays = load_prediction_npz(path, ("similarity", "text_pids", "image_pids"))
    if arrays["similarity"].ndim != 2:
        raise DataFormatError(path, "similarity as a (T, I) matrix", f"shape {arrays['similarity'].shape}")
    return evaluate_retrieval(
        arrays["similarity"],
        arrays["text_pids"],
        arrays["image_pids"],
        source=str(path),
    )


def cosine_similarity(text_feats: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
    """IRRA's similarity: L2-normalised text features times L2-normalised image features."""
    import torch  # here, not at import: `saip-bench --help` lists every metric command without torch

    text = torch.nn.functional.normalize(text_feats.float(), dim=1)
    image = torch.nn.functional.normalize(image_feats.float(), dim=1)
    return text @ image.t()


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="preds.npz with similarity (T x I, larger = closer), text_pids (T), image_pids (I)",
    )


register_metric_command(
    MetricCommand(
        name="retrieval",
        help="text-to-image retrieval: R@1/5/10, mAP, mINP (%%), all queries, no filtering (FORMATS §13.2)",
        add_arguments=_add_arguments,
        compute=lambda args: evaluate_retrieval_file(args.input),
        main_metric="R1",
    )
)
