import json

import numpy as np
import pytest

from saip_bench.cli import main
from saip_bench.errors import DataFormatError
from saip_bench.metrics.attributes import evaluate_attributes, evaluate_attributes_file

LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
PROBS = np.array([[0.9, 0.5, 0.1], [0.4, 0.8, 0.6], [0.2, 0.3, 0.0]])  # 0.5 is *not* positive


def test_hand_computed():
    result = evaluate_attributes(PROBS, LABELS)
    # attr0: pos 1/2, neg 1/1; attr1: 1, 1; attr2 never positive: pos 0, neg 2/3
    assert result["mA"] == pytest.approx(100 * (0.75 + 1.0 + 1 / 3) / 3)
    # samples: exact; P={1,2} vs G={0,1}; all-negative prediction and ground truth -> 0 everywhere
    assert result["Acc"] == pytest.approx(100 * (1 + 1 / 3 + 0) / 3)
    assert result["Prec"] == pytest.approx(50.0)
    assert result["Rec"] == pytest.approx(50.0)
    assert result["F1"] == pytest.approx(50.0)


def test_eval_idx_and_f1_from_averages():
    result = evaluate_attributes(PROBS, LABELS, eval_idx=np.array([0, 1]))
    assert result["num_attributes"] == 2
    assert result["mA"] == pytest.approx(87.5)
    assert result["Acc"] == pytest.approx(50.0)
    assert result["Prec"] == pytest.approx(100 * 2 / 3)
    assert result["Rec"] == pytest.approx(50.0)
    # F1 from averaged Prec/Rec (4/7), not the mean of per-sample F1 (5/9)
    assert result["F1"] == pytest.approx(100 * 4 / 7)


def test_threshold_is_strict():
    labels = np.array([[1], [0]])
    assert evaluate_attributes(np.array([[0.5], [0.0]]), labels)["mA"] == pytest.approx(50.0)
    assert evaluate_attributes(np.array([[0.5001], [0.0]]), labels)["mA"] == pytest.approx(100.0)


def _reference(probs, labels):
    """From FORMATS §13.3 with explicit loops over attributes and samples."""
    eps = 1e-20
    pred = probs > 0.5
    mas = []
    for a in range(labels.shape[1]):
        tp = sum(1 for i in range(len(labels)) if labels[i, a] == 1 and pred[i, a])
        tn = sum(1 for i in range(len(labels)) if labels[i, a] == 0 and not pred[i, a])
        mas.append((tp / ((labels[:, a] == 1).sum() + eps) + tn / ((labels[:, a] == 0).sum() + eps)) / 2)
    accs, precs, recs = [], [], []
    for i in range(len(labels)):
        p, g = set(np.flatnonzero(pred[i])), set(np.flatnonzero(labels[i]))
        accs.append(len(p & g) / (len(p | g) + eps))
        precs.append(len(p & g) / (len(p) + eps))
        recs.append(len(p & g) / (len(g) + eps))
    prec, rec = np.mean(precs), np.mean(recs)
    return {
        "mA": 100 * np.mean(mas),
        "Acc": 100 * np.mean(accs),
        "Prec": 100 * prec,
        "Rec": 100 * rec,
        "F1": 100 * 2 * prec * rec / (prec + rec + eps),
    }


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((60, 12)) < rng.random(12)).astype(int)
    labels[:, 3] = 0  # an attribute never positive
    probs = rng.random((60, 12))
    probs[5] = 0.0  # an all-negative prediction row
    ours = evaluate_attributes(probs, labels)
    for key, value in _reference(probs, labels).items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_cli_and_errors(tmp_path, capsys):
    path = tmp_path / "preds.npz"
    np.savez(path, probs=PROBS, labels=LABELS, eval_idx=np.array([0, 1]))
    assert main(["metric", "attributes", "--input", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mA"] == pytest.approx(87.5)
    bad = tmp_path / "bad.npz"
    np.savez(bad, probs=PROBS, labels=LABELS * 2)
    with pytest.raises(DataFormatError, match="binary labels"):
        evaluate_attributes_file(bad)
    out_of_range = tmp_path / "idx.npz"
    np.savez(out_of_range, probs=PROBS, labels=LABELS, eval_idx=np.array([0, 7]))
    with pytest.raises(DataFormatError, match="eval_idx"):
        evaluate_attributes_file(out_of_range)
