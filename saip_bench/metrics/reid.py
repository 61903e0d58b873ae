"""Image ReID: CMC Rank-k, mAP and mINP exactly as docs/formats.md#image-reid-metrics (torchreid
``eval_market1501``).

Rules, per query q:
- gallery items with ``pid == -1`` (Market junk) are ignored; items with q's pid *and* q's camera are
  ignored (same-pid-same-camera exclusion, per query, not global); everything else stays, including
  Market distractors (pid 0), which are ordinary negatives;
- a query with no remaining same-pid item is skipped from *every* denominator (``num_valid_queries``);
- ranking: ascending distance; ties are broken by gallery order (a stable sort), which makes the result
  deterministic (numpy's quicksort in the reference leaves tie order unspecified);
- AP is non-interpolated (mean over hits of precision at the hit); INP = |hits| / (1-based rank of the
  last hit); CMC_k = share of valid queries whose first hit is within the top k.

Scores are percentages (0-100), as papers print them.

Why not argsort: only the ranks of the positives matter, and nothing after a query's last positive
can precede one. Per query, the items up to the last positive are sorted (numpy's vectorised sort) and
each positive is located with ``searchsorted``; same-id items come from an id index built once (no
(Q, G) comparison), and distances are computed per chunk of queries from features, so MSMT17 scale
(11,659 x 82,161) needs no 3.8 GB matrix and no 7.6 GB index matrix (``benchmarks/metrics_speed.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics import bootstrap
from saip_bench.metrics.base import MetricCommand, load_prediction_npz, register_metric_command
from saip_bench.metrics.checks import check_finite, check_ids, check_range

if TYPE_CHECKING:
    import torch

JUNK_PID = -1
RANKS = (1, 5, 10)
CHUNK_ELEMENTS = 1 << 23  # distances per chunk (~8M): ~32 MB of float32


class GroupIndex:
    """Gallery columns per id, built once per evaluation: a query's same-id items without comparing
    its id with the whole gallery."""

    def __init__(self, col_ids: np.ndarray) -> None:
        self.col_ids = np.asarray(col_ids)
        self.order = np.argsort(self.col_ids, kind="stable")
        self.ids, self.starts, self.sizes = np.unique(
            self.col_ids[self.order], return_index=True, return_counts=True
        )

    def members(self, row_id: int) -> np.ndarray:
        """Columns holding ``row_id``, ascending."""
        k = int(np.searchsorted(self.ids, row_id))
        if k >= self.ids.size or self.ids[k] != row_id:
            return np.zeros(0, dtype=np.int64)
        return self.order[self.starts[k] : self.starts[k] + self.sizes[k]]


def positive_ranks(
    row: np.ndarray, same: np.ndarray, positive: np.ndarray, counted: np.ndarray | None = None
) -> np.ndarray:
    """0-based ranks of one query's ``positive`` columns among its counted items, ascending ``row``.

    ``same``: every column sharing the query's id (positives plus excluded same-camera items);
    ``positive`` ⊆ ``same``; ``counted``: bool mask of columns that exist at all (None = all; junk is
    not counted). Counted columns outside ``same`` are negatives. Ties are broken by column index.

    Only the items not after the last positive matter: they are sorted (numpy's vectorised sort) and
    each positive's rank is (items strictly closer) - (same-id items strictly closer) + (tied
    negatives with a smaller column) + (positives before it).
    """
    pos_dist = row[positive]
    order = np.lexsort((positive, pos_dist))  # by distance, then column
    pos_dist, pos_col = pos_dist[order], positive[order]
    ahead = row <= pos_dist[-1]
    if counted is not None:
        ahead &= counted
    items = np.sort(row[ahead])
    closer = np.searchsorted(items, pos_dist, side="left")
    equal = np.searchsorted(items, pos_dist, side="right") - closer
    same_dist = row[same] if counted is None else row[same[counted[same]]]
    same_closer = (same_dist[None, :] < pos_dist[:, None]).sum(1)
    same_equal = (same_dist[None, :] == pos_dist[:, None]).sum(1)
    ties = np.zeros_like(closer)
    for j in np.flatnonzero(equal > same_equal):  # a negative at exactly a positive's distance (rare)
        tied = np.flatnonzero(row[: pos_col[j]] == pos_dist[j])
        if counted is not None:
            tied = tied[counted[tied]]
        ties[j] = tied.size - np.isin(tied, same).sum()
    return closer - same_closer + ties + np.arange(pos_dist.size)


def rank_summary(ranks: np.ndarray) -> tuple[int, float, float]:
    """(first-hit rank, AP, INP) of one query from its positives' 0-based ranks (ascending)."""
    hits = np.arange(1, ranks.size + 1, dtype=np.float64)
    ap = float(np.mean(hits / (ranks + 1.0)))
    inp = ranks.size / (float(ranks[-1]) + 1.0)
    return int(ranks[0]), ap, inp


def as_id_vector(name: str, values: Any, length: int, source: str) -> np.ndarray:
    """A 1-D id array of ``length`` as int64: integers, or floats that are exact integers."""
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != length:
        raise DataFormatError(source, f"{name} as a 1-D array of length {length}", f"shape {array.shape}")
    return check_ids(array, source, name)


def as_float_matrix(name: str, array: Any, source: str) -> torch.Tensor:
    """A 2-D float32/float64 tensor of finite values (NaN or +-inf name the first offending index)."""
    import torch  # here, not at import: `saip-bench --help` lists every metric command without torch

    array = np.asarray(array)
    if array.ndim != 2 or array.dtype.kind != "f":
        raise DataFormatError(source, f"{name} as a 2-D float array", f"{array.dtype} shape {array.shape}")
    check_finite(array, source, name)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32 if array.dtype.itemsize < 4 else np.float64)
    return torch.as_tensor(array)


def rows_per_chunk(columns: int, chunk_size: int | None) -> int:
    return max(1, chunk_size or CHUNK_ELEMENTS // max(1, columns))


def _evaluate_reid_rows(
    distance_rows: Callable[[int, int], np.ndarray],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    chunk_size: int | None,
) -> dict[str, float]:
    num_q, num_g = q_pids.size, g_pids.size
    step = rows_per_chunk(num_g, chunk_size)
    index = GroupIndex(g_pids)
    junk = g_pids == JUNK_PID
    counted = ~junk if junk.any() else None
    firsts, aps, inps, valid = [], [], [], []
    for start in range(0, num_q, step):
        rows = distance_rows(start, min(num_q, start + step))
        for offset, row in enumerate(rows):
            i = start + offset
            same = index.members(int(q_pids[i]))
            positive = same[(g_camids[same] != q_camids[i]) & ~junk[same]]
            if positive.size == 0:
                continue  # no valid match: skipped from every denominator
            first, ap, inp = rank_summary(positive_ranks(row, same, positive, counted))
            firsts.append(first)
            aps.append(ap)
            inps.append(inp)
            valid.append(i)
    if not firsts:
        raise UserError("ReID evaluation: no query has a valid match in the gallery (all queries skipped)")
    first_hits = np.array(firsts)
    result: dict[str, float] = {f"rank{k}": 100.0 * float(np.mean(first_hits < k)) for k in RANKS}
    result["mAP"] = 100.0 * float(np.mean(aps))
    result["mINP"] = 100.0 * float(np.mean(inps))
    result["num_queries"] = float(num_q)
    result["num_valid_queries"] = float(len(firsts))
    if bootstrap.active():  # resample all queries; one without a valid match stays out of every mean
        bootstrap.offer("queries", num_q, reid_statistic(num_q, valid, first_hits, aps, inps))
    return result


def reid_statistic(num_q: int, valid: list[int], first_hits: np.ndarray, aps: list[float],
                   inps: list[float]) -> bootstrap.Statistic:
    """Rank-k, mAP, mINP (percent) of resampled queries, from the per-query values of the metric."""
    weight = np.zeros(num_q)
    weight[valid] = 1.0
    values = {f"rank{k}": np.zeros(num_q) for k in RANKS} | {"mAP": np.zeros(num_q), "mINP": np.zeros(num_q)}
    for k in RANKS:
        values[f"rank{k}"][valid] = 100.0 * (first_hits < k)
    values["mAP"][valid] = 100.0 * np.asarray(aps)
    values["mINP"][valid] = 100.0 * np.asarray(inps)
    return bootstrap.ratio_statistic(values, weight)


def evaluate_reid(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    chunk_size: int | None = None,
    source: str = "<arrays>",
) -> dict[str, float]:
    """CMC rank-1/5/10, mAP, mINP (percent) from a (Q, G) distance matrix (smaller = closer)."""
    dist = as_float_matrix("distmat", distmat, source).numpy()
    num_q, num_g = dist.shape
    qp = as_id_vector("q_pids", q_pids, num_q, source)
    gp = as_id_vector("g_pids", g_pids, num_g, source)
    qc = as_id_vector("q_camids", q_camids, num_q, source)
    gc = as_id_vector("g_camids", g_camids, num_g, source)
    return _evaluate_reid_rows(lambda a, b: dist[a:b], qp, gp, qc, gc, chunk_size)


def evaluate_reid_features(
    q_feats: Any,
    g_feats: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    chunk_size: int | None = None,
    normalize: bool = True,
    source: str = "<arrays>",
) -> dict[str, float]:
    """Same metrics from features, ranked by cosine similarity (the order of Euclidean distance on
    L2-normalised features, as torchreid with ``normalize_feature``), computed per chunk of queries:
    the (Q, G) matrix never exists as a whole."""
    import torch

    q = as_float_matrix("q_feats", q_feats, source)
    g = as_float_matrix("g_feats", g_feats, source)
    limit = float(np.finfo(np.float32).max)
    for name, feats in (("q_feats", q), ("g_feats", g)):
        check_range(feats.numpy(), -limit, limit, source, name, " (features are scored in float32)")
    q, g = q.float(), g.float()
    if q.shape[1] != g.shape[1]:
        raise DataFormatError(
            source, "q_feats and g_feats of the same width", f"{q.shape[1]} vs {g.shape[1]}"
        )
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    qp = as_id_vector("q_pids", q_pids, q.shape[0], source)
    gp = as_id_vector("g_pids", g_pids, g.shape[0], source)
    qc = as_id_vector("q_camids", q_camids, q.shape[0], source)
    gc = as_id_vector("g_camids", g_camids, g.shape[0], source)
    g_t = g.t().contiguous()
    return _evaluate_reid_rows(lambda a, b: torch.mm(q[a:b], g_t).neg_().numpy(), qp, gp, qc, gc, chunk_size)


def evaluate_reid_file(path: str | Path, chunk_size: int | None = None) -> dict[str, float]:
    """Score a ReID prediction file: ``distmat`` (or ``q_feats`` + ``g_feats``) plus pid/camid arrays."""
    ids = ("q_pids", "g_pids", "q_camids", "g_camids")
    arrays = load_prediction_npz(path, ids, optional=("distmat", "q_feats", "g_feats"))
    if "distmat" in arrays:
        return evaluate_reid(
            arrays["distmat"], *(arrays[k] for k in ids), chunk_size=chunk_size, source=str(path)
        )
    if "q_feats" in arrays and "g_feats" in arrays:
        return evaluate_reid_features(
            arrays["q_feats"],
            arrays["g_feats"],
            *(arrays[k] for k in ids),
            chunk_size=chunk_size,
            source=str(path),
        )
    raise DataFormatError(path, "a 'distmat' array (or 'q_feats' and 'g_feats')", f"keys {sorted(arrays)}")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="preds.npz with distmat (Q x G, smaller = closer), q_pids, g_pids, q_camids, g_camids "
        "(or q_feats + g_feats instead of distmat)",
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per chunk (default: auto)")


register_metric_command(
    MetricCommand(
        name="reid",
        help="person ReID: Rank-1/5/10, mAP, mINP (%%) with same-pid-same-camera exclusion (FORMATS §13.1)",
        add_arguments=_add_arguments,
        compute=lambda args: evaluate_reid_file(args.input, chunk_size=args.chunk_size),
        main_metric="rank1",
    )
)
