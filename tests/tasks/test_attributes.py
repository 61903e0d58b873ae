import copy

import numpy as np
import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.data.records import DatasetSplits
from saip_bench.errors import DataFormatError
from saip_bench.metrics.attributes import evaluate_attributes_file
from saip_bench.specs import get_task_spec
from saip_bench.tasks.attributes import eval_columns, weighted_bce
from saip_bench.tasks.base import UnitContext, get_task


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny", img_size=(64, 32))


def test_weighted_bce_weights_rare_positives_up():
    ratio = torch.tensor([0.1, 0.9])
    logits = torch.zeros(1, 2)
    # a missed rare positive costs exp(0.9)/exp(0.1) times more than a missed common positive
    rare = weighted_bce(logits, torch.tensor([[1.0, 0.0]]), ratio)
    common = weighted_bce(logits, torch.tensor([[0.0, 1.0]]), ratio)
    log2 = float(np.log(2))
    assert rare == pytest.approx(log2 * (np.exp(0.9) + np.exp(0.9)))
    assert common == pytest.approx(log2 * (np.exp(0.1) + np.exp(0.1)))


def test_eval_columns_follow_reader_meta():
    data = DatasetSplits(
        "peta", "default", ".", {"test": [{"path": "x", "labels": [0] * 5}]}, {"eval_idx": [0, 3]}
    )
    assert eval_columns(data) == [0, 3]
    data.meta = {}
    assert eval_columns(data) == [0, 1, 2, 3, 4]
    data.meta = {"eval_idx": [7]}
    with pytest.raises(DataFormatError, match="eval_idx"):
        eval_columns(data)


def _context(tmp_path, world, dataset, protocol, backbone, **overrides):
    spec = get_task_spec("attributes", dataset)
    spec.protocols["finetune"].schedule.max_steps = 2
    spec.protocols["finetune"].schedule.batch_size = 8
    spec.protocols["linear"].schedule.max_steps = 30
    for name in spec.protocols:
        spec.protocols[name].params["input_size"] = [64, 32]
    data = read_dataset(dataset, world / dataset, spec.dataset_version)
    return UnitContext(
        spec=spec,
        protocol=protocol,
        backbone=copy.deepcopy(backbone),
        data=data,
        out_dir=tmp_path / protocol,
        cache_dir=tmp_path / "cache",
        show_progress=False,
        **overrides,
    )


@pytest.mark.parametrize(
    ("dataset", "protocol"),
    [("pa100k", "linear"), ("pa100k", "finetune"), ("peta", "linear"), ("peta", "finetune")],
)
def test_runs_end_to_end_on_synthetic_world(tmp_path, synth_world, vit, dataset, protocol):
    ctx = _context(tmp_path, synth_world, dataset, protocol, vit, visualize=2)
    result = get_task("attributes").run(ctx)
    assert set(result.scores) >= {"mA", "Acc", "Prec", "Rec", "F1"}
    assert result.main_metric == "mA" and result.extra["protocol"] == protocol
    columns = ctx.data.meta["eval_idx"]
    assert result.extra["num_attributes"] == len(columns)
    if dataset == "peta":
        assert ctx.data.version == "zs" and len(columns) == 35  # PETAzs: all stored attributes
    test = ctx.data.splits["test"]
    with np.load(result.predictions[0]) as preds:
        assert preds["probs"].shape == preds["labels"].shape == (len(test), len(columns))
        assert ((preds["probs"] >= 0) & (preds["probs"] <= 1)).all()
        assert preds["labels"].tolist() == [[r["labels"][i] for i in columns] for r in test]
    assert evaluate_attributes_file(result.predictions[0]) == result.scores
    train = ctx.spec.splits["train"]
    expected = sum(len(ctx.data.splits[s]) for s in train.split("+"))
    assert result.n_samples["train"]["original"] == expected
    assert len(list((ctx.out_dir / "vis").glob("*.png"))) == 2
    # the paper protocol keeps the best epoch on the test split (scored every epoch), linear the last
    assert result.extra["selection"] == ("best_test" if protocol == "finetune" else "final")
    if protocol == "finetune":
        assert result.extra["epochs_evaluated"] >= 1 and result.extra["selected_epoch"] >= 1


def test_linear_protocol_is_deterministic(tmp_path, synth_world, vit):
    first = get_task("attributes").run(_context(tmp_path, synth_world, "pa100k", "linear", vit))
    second = get_task("attributes").run(_context(tmp_path, synth_world, "pa100k", "linear", vit))
    assert first.scores == second.scores


def test_linear_protocol_standardises_frozen_features(vit):
    """MAE's linear-probe BatchNorm (no affine) sits before the classifier only where the protocol asks."""
    task = get_task("attributes")
    data = DatasetSplits("pa100k", "default", ".", {"test": [{"path": "x", "labels": [0] * 26}]}, {})
    spec = get_task_spec("attributes", "pa100k")
    task.protocol = spec.protocols["linear"]
    head = task.build_head(vit, spec, data)
    assert isinstance(head, torch.nn.Sequential)
    norm, classifier = head
    assert isinstance(norm, torch.nn.BatchNorm1d) and norm.weight is None
    assert classifier.out_features == 26
    features = torch.randn(64, vit.num_features) * 50 + 7
    head.train()
    standardised = norm(features)
    assert standardised.mean().abs() < 1e-4 and (standardised.std(0) - 1).abs().max() < 0.05
    task.protocol = spec.protocols["finetune"]
    assert isinstance(task.build_head(vit, spec, data), torch.nn.Linear)


def test_paper_protocol_steps_reduce_on_plateau_with_the_test_loss(tmp_path, synth_world, vit):
    """Rethinking-of-PAR's schedule: ReduceLROnPlateau on the test-split loss after every epoch; the loss is
    the training loss (train positive ratios) on the test predictions."""
    from saip_bench.tasks.attributes import positive_ratio

    ctx = _context(tmp_path, synth_world, "pa100k", "finetune", vit, max_train_samples=16,
                   max_eval_samples=24, checkpoint_every=100, bootstrap_resamples=0)
    ctx.spec.protocols["finetune"].schedule.max_steps = None
    ctx.spec.protocols["finetune"].schedule.epochs = 3
    ctx.spec.protocols["finetune"].schedule.plateau_patience = 0
    ctx.spec.protocols["finetune"].selection = "final"
    task = get_task("attributes")
    result = task.run(ctx)
    history = result.extra["plateau"]
    assert len(history) == 3 and all(np.isfinite(h["test_loss"]) for h in history)
    losses = [h["test_loss"] for h in history]
    expected, best = [], float("inf")
    for value in losses:  # patience 0: every epoch that does not improve on the best divides the LR by 10
        factor = (expected[-1] if expected else 1.0) * (1.0 if value < best * (1 - 1e-4) else 0.1)
        best = min(best, value)
        expected.append(factor)
    assert [h["lr_factor"] for h in history] == pytest.approx(expected)
    with np.load(result.predictions[0]) as preds:  # the last epoch's loss from the saved probabilities
        probs = torch.from_numpy(preds["probs"]).double().clamp(1e-7, 1 - 1e-7)
        labels = torch.from_numpy(preds["labels"]).double()
    columns = ctx.data.meta["eval_idx"]
    train = [r for s in ctx.spec.splits["train"].split("+") for r in ctx.data.splits[s]]
    ratio = positive_ratio(torch.tensor([[r["labels"][i] for i in columns] for r in train],
                                        dtype=torch.float32)).double()
    weights = torch.where(labels > 0.5, torch.exp(1 - ratio), torch.exp(ratio))
    bce = -(labels * probs.log() + (1 - labels) * (1 - probs).log())
    assert float((bce * weights).sum(1).mean()) == pytest.approx(losses[-1], rel=1e-3)
