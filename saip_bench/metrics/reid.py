"""Image ReID: CMC Rank-k, mAP and mINP exactly as FORMATS.md §13.1 (torchreid ``eval_market1501``).

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

Why not argsort: only the ranks of the positives matter. For each query the positives are sorted by
(distance, gallery index) and every other kept gallery item is bucketed among them with one batched
``searchsorted``; a bincount + cumsum then gives each positive's rank. That is O(G log K) per query
instead of O(G log G), needs no (Q, G) index matrix, and runs over chunks of queries so MSMT17 scale
(11,659 x 82,161) needs a few hundred MB (``benchmarks/metrics_speed.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics.base import MetricCommand, load_prediction_npz, register_metric_command

JUNK_PID = -1
RANKS = (1, 5, 10)
CHUNK_ELEMENTS = 1 << 23  # distances per chunk (~8M): ~32 MB of float32 plus a few small buffers
SPARSE_SHARE = 0.2  # above this share of items ahead of the last positive, the dense path is faster
SPARSE_BLOCK = 1 << 16  # candidates compared with their row's positives at once


class GroupIndex:
    """Column positions per id (built once per evaluation): a query's same-id gallery items without a
    (Q, G) comparison."""

    def __init__(self, col_ids: torch.Tensor) -> None:
        self.col_ids = col_ids
        self.order = torch.argsort(col_ids, stable=True)
        self.ids, self.sizes = torch.unique_consecutive(col_ids[self.order], return_counts=True)
        self.starts = torch.cumsum(self.sizes, 0) - self.sizes

    def members(self, row_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of every same-id pair, row-major with ascending columns."""
        if self.ids.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        slot = torch.searchsorted(self.ids, row_ids).clamp(max=self.ids.numel() - 1)
        sizes = torch.where(self.ids[slot] == row_ids, self.sizes[slot], torch.zeros_like(slot))
        rows = torch.repeat_interleave(torch.arange(row_ids.numel()), sizes)
        offsets = torch.arange(rows.numel()) - (torch.cumsum(sizes, 0) - sizes)[rows]
        # ``order`` lists each id's columns ascending (stable argsort), so rows come out column-sorted
        return rows, self.order[self.starts[slot[rows]] + offsets]


def positive_ranks(
    dist: torch.Tensor,
    row_ids: torch.Tensor,
    index: GroupIndex,
    row_cams: torch.Tensor | None = None,
    col_cams: torch.Tensor | None = None,
    col_ignore: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks of each row's positives among its counted items, ascending ``dist``.

    Column j is, for row i: *positive* if ``col_ids[j] == row_ids[i]``, not ``col_ignore[j]`` and (when
    cameras are given) not on the row's camera; *excluded* if same id and same camera or ``col_ignore``;
    otherwise a counted negative. Ties are broken by column index. Returns ``(ranks, counts)``: ranks
    (B, K) int64 ascending, padded with -1 beyond ``counts`` (B,) = positives per row.
    """
    rows_n, cols_n = dist.shape
    rows, cols = index.members(row_ids)
    keep = torch.ones_like(rows, dtype=torch.bool)
    if col_ignore is not None:
        keep &= ~col_ignore[cols]
    if row_cams is not None and col_cams is not None:
        keep &= col_cams[cols] != row_cams[rows]
    rows, cols = rows[keep], cols[keep]
    counts = torch.bincount(rows, minlength=rows_n)
    width = int(counts.max()) if rows_n else 0
    if width == 0:
        return torch.full((rows_n, 0), -1, dtype=torch.long), counts
    # Each row's positives in a padded (B, K) table, sorted by (distance, column).
    slot = torch.arange(rows.numel()) - (torch.cumsum(counts, 0) - counts)[rows]
    pos_dist = torch.full((rows_n, width), float("inf"), dtype=dist.dtype)
    pos_col = torch.full((rows_n, width), cols_n, dtype=torch.long)
    pos_dist[rows, slot] = dist[rows, cols]
    pos_col[rows, slot] = cols
    pos_dist, order = torch.sort(pos_dist, dim=1, stable=True)  # stable: column order among ties
    pos_col = torch.gather(pos_col, 1, order)

    # Items farther than a row's last positive precede no positive: only the rest need counting.
    last = torch.gather(pos_dist, 1, (counts - 1).clamp(min=0)[:, None])
    last.masked_fill_((counts == 0)[:, None], float("-inf"))
    candidate = dist <= last
    if col_ignore is not None:
        candidate &= ~col_ignore[None, :]
    before = torch.zeros((rows_n, width + 1), dtype=torch.long)
    cand_rows, cand_cols = candidate.nonzero(as_tuple=True)
    if cand_rows.numel() <= SPARSE_SHARE * candidate.numel():
        negative = index.col_ids[cand_cols] != row_ids[cand_rows]  # same-id items are never negatives
        cand_rows, cand_cols = cand_rows[negative], cand_cols[negative]
        for start in range(0, cand_rows.numel(), SPARSE_BLOCK):
            r = cand_rows[start : start + SPARSE_BLOCK]
            c = cand_cols[start : start + SPARSE_BLOCK]
            d = dist[r, c][:, None]
            row_dist, row_col = pos_dist[r], pos_col[r]
            ahead = (row_dist < d) | ((row_dist == d) & (row_col < c[:, None]))
            before.index_put_((r, ahead.sum(1)), torch.ones_like(r), accumulate=True)
    else:  # dense: bucket every item among the positives with one batched binary search
        others = index.col_ids[None, :] != row_ids[:, None]
        if col_ignore is not None:
            others &= ~col_ignore[None, :]
        bucket = torch.searchsorted(pos_dist, dist.contiguous(), right=False)  # positives strictly closer
        nearest = torch.gather(pos_dist, 1, bucket.clamp(max=width - 1))
        tied = others & (nearest == dist)
        if bool(tied.any()):
            _resolve_ties(bucket, tied, dist, pos_dist, pos_col)
        bucket.masked_fill_(~others, width)  # positives and excluded items are not counted
        before.scatter_add_(1, bucket, torch.ones_like(bucket))
    ranks = torch.cumsum(before[:, :width], 1) + torch.arange(width)
    ranks.masked_fill_(torch.arange(width) >= counts[:, None], -1)
    return ranks, counts


def _resolve_ties(
    bucket: torch.Tensor,
    tied: torch.Tensor,
    dist: torch.Tensor,
    pos_dist: torch.Tensor,
    pos_col: torch.Tensor,
) -> None:
    """Items at exactly a positive's distance: positives with a smaller column index come first."""
    rows, cols = tied.nonzero(as_tuple=True)
    for start in range(0, rows.numel(), 1 << 18):
        r, c = rows[start : start + (1 << 18)], cols[start : start + (1 << 18)]
        same = pos_dist[r] == dist[r, c][:, None]
        earlier = (same & (pos_col[r] < c[:, None])).sum(1)
        bucket[r, c] += earlier


def summarize_ranks(ranks: torch.Tensor, counts: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-row first-hit rank, AP and INP from ``positive_ranks`` output (rows without positives: NaN)."""
    valid = counts > 0
    width = ranks.shape[1]
    hits = torch.arange(1, width + 1, dtype=torch.float64)
    filled = ranks >= 0
    precision = torch.where(filled, hits / (ranks.double() + 1.0), torch.zeros((), dtype=torch.float64))
    denom = counts.double().clamp(min=1)
    ap = precision.sum(1) / denom
    last = torch.gather(ranks, 1, (counts - 1).clamp(min=0)[:, None]).squeeze(1) if width else counts
    inp = counts.double() / (last.double() + 1.0)
    first = ranks[:, 0] if width else torch.full_like(counts, -1)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    return {
        "first": torch.where(valid, first, torch.full_like(first, -1)).numpy(),
        "ap": torch.where(valid, ap, nan).numpy(),
        "inp": torch.where(valid, inp, nan).numpy(),
        "valid": valid.numpy(),
    }


def as_id_vector(name: str, values: np.ndarray, length: int, source: str) -> torch.Tensor:
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != length:
        raise DataFormatError(source, f"{name} as a 1-D array of length {length}", f"shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.equal(np.mod(array, 1), 0)):
            raise DataFormatError(source, f"{name} as integers", f"dtype {array.dtype}")
    return torch.from_numpy(array.astype(np.int64))


def as_float_matrix(name: str, array: Any, source: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array))
    if tensor.ndim != 2 or not tensor.is_floating_point():
        raise DataFormatError(
            source, f"{name} as a 2-D float array", f"{tensor.dtype} shape {tuple(tensor.shape)}"
        )
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    if bool(torch.isnan(tensor).any()):
        raise DataFormatError(source, f"{name} without NaN values", "NaN")
    return tensor


def rows_per_chunk(columns: int, chunk_size: int | None) -> int:
    return max(1, chunk_size or CHUNK_ELEMENTS // max(1, columns))


def _evaluate_reid_rows(
    distance_rows: Callable[[int, int], torch.Tensor],
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    chunk_size: int | None,
) -> dict[str, float]:
    num_q, num_g = q_pids.numel(), g_pids.numel()
    step = rows_per_chunk(num_g, chunk_size)
    index = GroupIndex(g_pids)
    junk = g_pids == JUNK_PID
    firsts, aps, inps, valids = [], [], [], []
    for start in range(0, num_q, step):
        stop = min(num_q, start + step)
        ranks, counts = positive_ranks(
            distance_rows(start, stop), q_pids[start:stop], index, q_camids[start:stop], g_camids, junk
        )
        summary = summarize_ranks(ranks, counts)
        firsts.append(summary["first"])
        aps.append(summary["ap"])
        inps.append(summary["inp"])
        valids.append(summary["valid"])
    valid = np.concatenate(valids) if valids else np.zeros(0, bool)
    first = np.concatenate(firsts)[valid] if valids else np.zeros(0)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise UserError("ReID evaluation: no query has a valid match in the gallery (all queries skipped)")
    result: dict[str, float] = {}
    for k in RANKS:
        result[f"rank{k}"] = 100.0 * float(np.mean(first < k))
    result["mAP"] = 100.0 * float(np.mean(np.concatenate(aps)[valid]))
    result["mINP"] = 100.0 * float(np.mean(np.concatenate(inps)[valid]))
    result["num_queries"] = float(num_q)
    result["num_valid_queries"] = float(num_valid)
    return result


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
    dist = as_float_matrix("distmat", distmat, source)
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
    q = as_float_matrix("q_feats", q_feats, source).float()
    g = as_float_matrix("g_feats", g_feats, source).float()
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
    return _evaluate_reid_rows(lambda a, b: torch.mm(q[a:b], g_t).neg_(), qp, gp, qc, gc, chunk_size)


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
