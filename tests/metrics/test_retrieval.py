import json

import numpy as np
import pytest

from saip_bench.cli import main
from saip_bench.errors import DataFormatError
from saip_bench.metrics.retrieval import evaluate_retrieval, evaluate_retrieval_file


def _fixture():
    image_pids = np.array([2, 1, 1, 3])
    similarity = np.array(
        [
            [0.9, 0.8, 0.1, 0.5],  # pid 1: order i0 i1 i3 i2 -> hits at ranks 2 and 4
            [0.2, 0.3, 0.1, 0.7],  # pid 3: hit at rank 1
        ],
        dtype=np.float32,
    )
    return similarity, np.array([1, 3]), image_pids


def test_hand_computed():
    result = evaluate_retrieval(*_fixture())
    assert result["R1"] == pytest.approx(50.0)
    assert result["R5"] == pytest.approx(100.0) and result["R10"] == pytest.approx(100.0)
    assert result["mAP"] == pytest.approx(75.0)  # (0.5 + 1) / 2
    assert result["mINP"] == pytest.approx(75.0)  # (2/4 + 1) / 2


def test_query_without_match_counts_as_zero_and_no_camera_filter():
    similarity, text_pids, image_pids = _fixture()
    with_orphan = np.vstack([similarity, [[0.1, 0.2, 0.3, 0.4]]])
    result = evaluate_retrieval(with_orphan, np.append(text_pids, 9), image_pids)
    assert result["R1"] == pytest.approx(100 / 3)
    assert result["mAP"] == pytest.approx(50.0)
    assert result["num_queries_without_match"] == 1


def test_ties_follow_gallery_order():
    tied = np.array([[0.5, 0.5]])
    assert evaluate_retrieval(tied, np.array([1]), np.array([2, 1]))["R1"] == 0.0
    assert evaluate_retrieval(tied, np.array([1]), np.array([1, 2]))["R1"] == 100.0


def _reference(similarity, text_pids, image_pids):
    """IRRA-style from FORMATS §13.2: descending stable argsort, cumsum, clip, mean over all queries."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    matches = (image_pids[order] == text_pids[:, None]).astype(np.float64)
    cmc = np.minimum(matches.cumsum(1), 1).mean(0) * 100
    cumulative = matches.cumsum(1)
    positions = np.arange(1, matches.shape[1] + 1)
    ap = (cumulative / positions * matches).sum(1) / matches.sum(1)
    last = np.array([np.flatnonzero(row)[-1] for row in matches])
    inp = cumulative[np.arange(len(last)), last] / (last + 1.0)
    return {"R1": cmc[0], "R5": cmc[4], "R10": cmc[9], "mAP": 100 * ap.mean(), "mINP": 100 * inp.mean()}


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    num_i = int(rng.integers(20, 300))
    image_pids = rng.integers(0, 15, num_i)
    text_pids = rng.choice(image_pids, size=int(rng.integers(10, 120)))  # every query has a match
    similarity = rng.normal(size=(text_pids.size, num_i))
    if seed % 2:
        similarity = np.round(similarity * 2) / 2
    ours = evaluate_retrieval(similarity, text_pids, image_pids)
    for key, value in _reference(similarity, text_pids, image_pids).items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_cli_and_errors(tmp_path, capsys):
    path = tmp_path / "preds.npz"
    similarity, text_pids, image_pids = _fixture()
    np.savez(path, similarity=similarity, text_pids=text_pids, image_pids=image_pids)
    assert main(["metric", "retrieval", "--input", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mAP"] == pytest.approx(75.0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, similarity=similarity, text_pids=text_pids, image_pids=image_pids[:3])
    with pytest.raises(DataFormatError, match="image_pids"):
        evaluate_retrieval_file(bad)
    with pytest.raises(DataFormatError, match="missing.npz"):
        evaluate_retrieval_file(tmp_path / "missing.npz")
