import json

import numpy as np
import pytest

from saip_bench.cli import main
from saip_bench.errors import DataFormatError, UserError
from saip_bench.metrics.reid import evaluate_reid, evaluate_reid_features, evaluate_reid_file


def _fixture():
    """q0 (pid 1, cam 0): hits at kept ranks 2 and 4; q1 (pid 3): no match -> skipped; q2: hit at rank 1."""
    g_pids = np.array([1, 2, -1, 1, 0, 1])
    g_cams = np.array([0, 1, 1, 1, 2, 2])
    q_pids = np.array([1, 3, 2])
    q_cams = np.array([0, 0, 0])
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # g0 same pid+cam (dropped), g2 junk, g4 distractor kept
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],
        ],
        dtype=np.float32,
    )
    return distmat, q_pids, g_pids, q_cams, g_cams


def test_hand_computed_rules():
    result = evaluate_reid(*_fixture())
    assert result["num_queries"] == 3 and result["num_valid_queries"] == 2
    assert result["rank1"] == pytest.approx(50.0)  # skipped query not in the denominator (else 33.3)
    assert result["rank5"] == pytest.approx(100.0)
    assert result["rank10"] == pytest.approx(100.0)
    # q0: AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4; q2: AP = INP = 1
    assert result["mAP"] == pytest.approx(75.0)
    assert result["mINP"] == pytest.approx(75.0)


def test_junk_is_ignored_and_distractor_counts():
    distmat, q_pids, g_pids, q_cams, g_cams = _fixture()
    # Junk at distance 0 changes nothing; a distractor (pid 0) at distance 0 pushes the hits down.
    junk_first = distmat.copy()
    junk_first[0, 2] = 0.0
    assert evaluate_reid(junk_first, q_pids, g_pids, q_cams, g_cams)["mAP"] == pytest.approx(75.0)
    distractor_first = distmat.copy()
    distractor_first[2, 4] = 0.0
    result = evaluate_reid(distractor_first, q_pids, g_pids, q_cams, g_cams)
    assert result["rank1"] == pytest.approx(0.0)
    assert result["mAP"] == pytest.approx((0.5 + 0.5) / 2 * 100)


def test_same_camera_exclusion_is_per_query():
    g_pids, g_cams = np.array([5, 5, 7]), np.array([0, 1, 0])
    q_pids, q_cams = np.array([5, 5]), np.array([0, 1])
    distmat = np.array([[0.1, 0.5, 0.3], [0.1, 0.5, 0.3]])
    result = evaluate_reid(distmat, q_pids, g_pids, q_cams, g_cams)
    # q0 (cam 0): g0 dropped, ranking g2, g1 -> hit at 2. q1 (cam 1): g1 dropped, g0 hit at 1.
    assert result["rank1"] == pytest.approx(50.0)
    assert result["mAP"] == pytest.approx((0.5 + 1.0) / 2 * 100)


def test_ties_follow_gallery_order():
    q_pids, q_cams = np.array([1]), np.array([0])
    negative_first = evaluate_reid(np.array([[0.5, 0.5]]), q_pids, np.array([2, 1]), q_cams, np.array([1, 1]))
    positive_first = evaluate_reid(np.array([[0.5, 0.5]]), q_pids, np.array([1, 2]), q_cams, np.array([1, 1]))
    assert negative_first["rank1"] == 0.0 and negative_first["mAP"] == pytest.approx(50.0)
    assert positive_first["rank1"] == 100.0 and positive_first["mAP"] == pytest.approx(100.0)


def test_no_valid_query_is_an_error():
    with pytest.raises(UserError, match="no query"):
        evaluate_reid(np.zeros((1, 2)), np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 0]))


def _reference(distmat, q_pids, g_pids, q_camids, g_camids):
    """Straight from FORMATS §13.1: full stable argsort per query, drop, skip, cumsum."""
    order = np.argsort(distmat, axis=1, kind="stable")
    cmc_hits, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        ranked = order[i]
        drop = ((g_pids[ranked] == q_pids[i]) & (g_camids[ranked] == q_camids[i])) | (g_pids[ranked] == -1)
        matches = (g_pids[ranked] == q_pids[i])[~drop].astype(np.float64)
        if matches.sum() == 0:
            continue
        cumulative = matches.cumsum()
        hit_positions = np.flatnonzero(matches)
        cmc_hits.append([float(hit_positions[0] < k) for k in (1, 5, 10)])
        aps.append(np.sum(cumulative[hit_positions] / (hit_positions + 1.0)) / matches.sum())
        inps.append(cumulative[hit_positions[-1]] / (hit_positions[-1] + 1.0))
    cmc = np.mean(cmc_hits, axis=0) * 100
    return {
        "rank1": cmc[0],
        "rank5": cmc[1],
        "rank10": cmc[2],
        "mAP": 100 * np.mean(aps),
        "mINP": 100 * np.mean(inps),
    }


@pytest.mark.parametrize("seed", range(10))
def test_matches_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(10, 80)), int(rng.integers(30, 400))
    q_pids, g_pids = rng.integers(0, 12, num_q), rng.integers(-1, 15, num_g)
    q_cams, g_cams = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    distmat = rng.random((num_q, num_g))
    if seed % 2:
        distmat = np.round(distmat * 5) / 5  # heavy ties
    ours = evaluate_reid(distmat, q_pids, g_pids, q_cams, g_cams, chunk_size=int(rng.integers(1, 9)))
    reference = _reference(distmat, q_pids, g_pids, q_cams, g_cams)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_features_path_equals_distmat_path():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(20, 8)), rng.normal(size=(90, 8))
    q_pids, g_pids = rng.integers(0, 6, 20), rng.integers(0, 6, 90)
    q_cams, g_cams = rng.integers(0, 3, 20), rng.integers(0, 3, 90)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    distmat = ((qn[:, None, :] - gn[None]) ** 2).sum(-1)  # squared Euclidean ranks like 1 - cos
    from_feats = evaluate_reid_features(q, g, q_pids, g_pids, q_cams, g_cams, chunk_size=7)
    from_dist = evaluate_reid(distmat, q_pids, g_pids, q_cams, g_cams)
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert from_feats[key] == pytest.approx(from_dist[key], abs=1e-6)


def test_cli_and_file_errors(tmp_path, capsys):
    path = tmp_path / "preds.npz"
    distmat, q_pids, g_pids, q_cams, g_cams = _fixture()
    np.savez(path, distmat=distmat, q_pids=q_pids, g_pids=g_pids, q_camids=q_cams, g_camids=g_cams)
    assert main(["metric", "reid", "--input", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mAP"] == pytest.approx(75.0) and printed["rank1"] == pytest.approx(50.0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, distmat=distmat, q_pids=q_pids)
    with pytest.raises(DataFormatError, match="bad.npz"):
        evaluate_reid_file(bad)
    assert main(["metric", "reid", "--input", str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err
    wrong_length = tmp_path / "wrong.npz"
    np.savez(
        wrong_length, distmat=distmat, q_pids=q_pids[:2], g_pids=g_pids, q_camids=q_cams, g_camids=g_cams
    )
    with pytest.raises(DataFormatError, match="q_pids"):
        evaluate_reid_file(wrong_length)
