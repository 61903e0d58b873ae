"""Time official metrics at real-dataset scale and print a markdown table (time, peak RSS).

    OMP_NUM_THREADS=2 python benchmarks/metrics_speed.py                  # all sections
    python benchmarks/metrics_speed.py --sections reid --naive-queries 300

Each case runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its own. A section
is a function returning a list of ``Case``; add one to ``SECTIONS`` to benchmark another metric.

ReID at MSMT17 scale (11,659 queries x 82,161 gallery, 15 cameras, 3,060 test ids): ours scores from
random features, computing distances per chunk. The naive baseline is torchreid's algorithm in numpy
(full ``argsort`` of the distance rows, a Python loop over queries); it is timed on a subset of the
queries and extrapolated linearly (it is per-query linear; the full run would need the 3.8 GB distance
matrix plus a 7.6 GB int64 index matrix).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MSMT17 = {"queries": 11_659, "gallery": 82_161, "ids": 3_060, "cameras": 15}
CUHK_PEDES = {"texts": 6_156, "images": 3_074, "ids": 1_000}


@dataclass
class Case:
    name: str
    run: Callable[[argparse.Namespace], dict]  # returns {"seconds": ..., "note": ...}


def _reid_data(num_q: int, dim: int, noise: float = 1.8, seed: int = 0) -> dict[str, np.ndarray]:
    """Identity centres plus isotropic noise; noise 1.8 gives mAP ~55 / mINP ~5 (a mid-quality model,
    pessimistic in mINP, which is what the ranking cost depends on); a huge noise is an untrained model."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, MSMT17["ids"], MSMT17["gallery"])
    q_pids = rng.choice(g_pids, size=num_q)
    centers = rng.normal(size=(MSMT17["ids"], dim)).astype(np.float32)
    return {
        "q_feats": centers[q_pids] + noise * rng.normal(size=(num_q, dim)).astype(np.float32),
        "g_feats": centers[g_pids] + noise * rng.normal(size=(g_pids.size, dim)).astype(np.float32),
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": rng.integers(0, MSMT17["cameras"], num_q),
        "g_camids": rng.integers(0, MSMT17["cameras"], g_pids.size),
    }


def naive_reid(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """torchreid's eval_market1501 algorithm, written plainly in numpy."""
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][~remove]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last = np.where(raw_cmc == 1)[0].max()
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        precision = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0)
        all_ap.append((precision * raw_cmc).sum() / num_rel)
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp))


def _subset(data: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: (v[:n] if k.startswith("q_") else v) for k, v in data.items()}


def reid_distances(args: argparse.Namespace) -> dict:
    """The part both implementations share: the chunked (Q, G) cosine similarities alone."""
    import torch

    import saip_bench  # noqa: F401
    from saip_bench.metrics.reid import rows_per_chunk

    data = _reid_data(MSMT17["queries"], args.dim)
    q = torch.nn.functional.normalize(torch.from_numpy(data["q_feats"]), dim=1)
    g_t = torch.nn.functional.normalize(torch.from_numpy(data["g_feats"]), dim=1).t().contiguous()
    step = rows_per_chunk(g_t.shape[1], None)
    started = time.perf_counter()
    for start in range(0, q.shape[0], step):
        torch.mm(q[start : start + step], g_t).neg_()
    return {"seconds": time.perf_counter() - started, "note": "distance computation only (both pay it)"}


def _reid_ours(args: argparse.Namespace, noise: float, queries: int) -> dict:
    import saip_bench  # noqa: F401
    from saip_bench.metrics.reid import evaluate_reid_features

    data = _subset(_reid_data(MSMT17["queries"], args.dim, noise), queries)
    started = time.perf_counter()
    scores = evaluate_reid_features(**data)
    seconds = time.perf_counter() - started
    note = f"mAP {scores['mAP']:.1f}, mINP {scores['mINP']:.1f}, R1 {scores['rank1']:.1f}"
    if queries < MSMT17["queries"]:
        note += f"; timed on {queries} queries, extrapolated x{MSMT17['queries'] / queries:.1f}"
    return {"seconds": seconds * MSMT17["queries"] / queries, "note": note}


def reid_ours(args: argparse.Namespace) -> dict:
    return _reid_ours(args, 1.8, MSMT17["queries"])


def reid_ours_untrained(args: argparse.Namespace) -> dict:
    """Worst case: unstructured features, positives spread over the whole ranking (dense path)."""
    return _reid_ours(args, 1000.0, min(args.naive_queries * 3, MSMT17["queries"]))


def reid_naive(args: argparse.Namespace) -> dict:
    n = min(args.naive_queries, MSMT17["queries"])
    data = _subset(_reid_data(MSMT17["queries"], args.dim), n)
    q = data["q_feats"] / np.linalg.norm(data["q_feats"], axis=1, keepdims=True)
    g = data["g_feats"] / np.linalg.norm(data["g_feats"], axis=1, keepdims=True)
    started = time.perf_counter()
    distmat = 1.0 - q @ g.T
    _, mean_ap, _ = naive_reid(distmat, data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"])
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds * MSMT17["queries"] / n,
        "note": f"mAP {100 * mean_ap:.1f}; timed on {n} queries, extrapolated x{MSMT17['queries'] / n:.1f} "
        "(all at once it needs 3.8 GB distances + 7.6 GB indices)",
    }


def _retrieval_data(dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image_pids = rng.integers(0, CUHK_PEDES["ids"], CUHK_PEDES["images"])
    text_pids = rng.choice(image_pids, size=CUHK_PEDES["texts"])
    centers = rng.normal(size=(CUHK_PEDES["ids"], dim))
    text = centers[text_pids] + 2.0 * rng.normal(size=(text_pids.size, dim))
    image = centers[image_pids] + 2.0 * rng.normal(size=(image_pids.size, dim))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    return {
        "similarity": (text @ image.T).astype(np.float32),
        "text_pids": text_pids,
        "image_pids": image_pids,
    }


def retrieval_ours(args: argparse.Namespace) -> dict:
    import saip_bench  # noqa: F401
    from saip_bench.metrics.retrieval import evaluate_retrieval

    data = _retrieval_data(args.dim)
    started = time.perf_counter()
    scores = evaluate_retrieval(**data)
    return {"seconds": time.perf_counter() - started, "note": f"R1 {scores['R1']:.2f}"}


def retrieval_naive(args: argparse.Namespace) -> dict:
    """IRRA's algorithm in numpy: full descending argsort, cumsum over the whole (T, I) match matrix."""
    data = _retrieval_data(args.dim)
    started = time.perf_counter()
    order = np.argsort(-data["similarity"], axis=1)
    matches = (data["image_pids"][order] == data["text_pids"][:, None]).astype(np.float64)
    cumulative = matches.cumsum(1)
    ap = (cumulative / np.arange(1, matches.shape[1] + 1) * matches).sum(1) / matches.sum(1)
    return {"seconds": time.perf_counter() - started, "note": f"mAP {100 * ap.mean():.2f}"}


SECTIONS: dict[str, list[Case]] = {
    "reid": [
        Case("reid MSMT17: distances only (shared by both)", reid_distances),
        Case("reid MSMT17: saip-bench, mid-quality features", reid_ours),
        Case("reid MSMT17: naive numpy (torchreid algorithm)", reid_naive),
        Case("reid MSMT17: saip-bench, untrained features (worst case)", reid_ours_untrained),
    ],
    "retrieval": [
        Case("retrieval CUHK-PEDES scale: saip-bench", retrieval_ours),
        Case("retrieval CUHK-PEDES scale: naive numpy", retrieval_naive),
    ],
}


def _run_case(section: str, index: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--case",
        f"{section}:{index}",
        "--dim",
        str(args.dim),
        "--naive-queries",
        str(args.naive_queries),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--dim", type=int, default=256, help="feature width of the random features")
    parser.add_argument(
        "--naive-queries", type=int, default=400, help="queries the naive ReID baseline times"
    )
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        section, index = args.case.split(":")
        result = SECTIONS[section][int(index)].run(args)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    print("| case | seconds | peak RSS (MiB) | note |")
    print("|---|---|---|---|")
    for section in args.sections:
        times = []
        for index, case in enumerate(SECTIONS[section]):
            result = _run_case(section, index, args)
            times.append(result["seconds"])
            print(
                f"| {case.name} | {result['seconds']:.1f} | {result['peak_rss_mib']:.0f} "
                f"| {result['note']} |",
                flush=True,
            )
        if section == "reid":
            shared, ours, naive = times[0], times[1], times[2]
            print(f"| reid: speed-up end to end | {naive / ours:.1f}x | | |")
            print(
                "| reid: speed-up of the ranking part (minus distances) "
                f"| {(naive - shared) / (ours - shared):.1f}x | | |"
            )
        elif len(times) == 2:
            print(f"| {section}: speed-up vs naive | {times[1] / times[0]:.1f}x | | |", flush=True)


if __name__ == "__main__":
    main()
