import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from saip_bench.backbones import create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.data.records import DatasetSplits
from saip_bench.metrics.reid import evaluate_reid_file
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.tasks.reid import collapsed_loss, pk_batches, triplet_loss


def _person(path, pid, cam, rng):
    colour = np.array([(pid * 67) % 255, (pid * 131) % 255, (pid * 29) % 255], dtype=np.float64)
    image = np.clip(colour + rng.normal(0, 20, size=(64, 32, 3)) + cam * 5, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return {"path": str(path), "pid": pid, "camid": cam}


@pytest.fixture(scope="module")
def market_like(tmp_path_factory):
    """A hand-made Market-style DatasetSplits (colour-coded identities, 3 cameras, a distractor)."""
    root = tmp_path_factory.mktemp("market_like")
    rng = np.random.default_rng(0)
    splits = {"train": [], "query": [], "gallery": []}
    for pid in range(1, 9):
        for k in range(4):
            splits["train"].append(_person(root / f"tr_{pid}_{k}.png", pid, k % 3, rng))
    for pid in range(20, 26):
        splits["query"].append(_person(root / f"q_{pid}.png", pid, 0, rng))
        for k in range(3):
            splits["gallery"].append(_person(root / f"g_{pid}_{k}.png", pid, k, rng))
    splits["gallery"].append(_person(root / "g_distractor.png", 0, 1, rng))
    return DatasetSplits("market1501", "default", root, splits, {})


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny", img_size=(64, 32))


def _context(tmp_path, data, protocol, backbone, **overrides):
    spec = get_task_spec("reid", "market1501")
    if protocol == "finetune":
        spec.protocols["finetune"].schedule.max_steps = 2
        spec.protocols["finetune"].schedule.batch_size = 8
    spec.protocols["linear"].schedule.max_steps = 30
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


def test_pk_batches_are_identity_balanced_and_seeded():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 5 + [3] * 4)
    batches = pk_batches(labels, batch_size=8, instances=4, seed=3)
    assert batches == pk_batches(labels, batch_size=8, instances=4, seed=3)
    for batch in batches:
        assert len(batch) == 8
        ids, counts = np.unique(labels[batch], return_counts=True)
        assert len(ids) == 2 and set(counts) == {4}


def test_triplet_loss_prefers_separated_identities():
    labels = torch.tensor([0, 0, 1, 1])
    separated = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    mixed = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.1, 0.0], [5.1, 5.0]])
    assert triplet_loss(separated, labels) < 0.01 < triplet_loss(mixed, labels)
    assert triplet_loss(mixed, labels, margin=0.3) > 0


def test_collapsed_loss_is_the_loss_of_identical_features():
    """ID at chance + triplet at d_ap = d_an: the value a collapsed fine-tune converges to."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    same = torch.ones(6, 4)
    logits = torch.zeros(6, 3)
    observed = F.cross_entropy(logits, labels) + triplet_loss(same, labels)
    assert collapsed_loss(3, None) == pytest.approx(float(observed), abs=1e-4)
    assert collapsed_loss(3, 0.3) == pytest.approx(math.log(3) + 0.3)


def _synth_context(tmp_path, world, dataset, protocol, backbone, **overrides):
    spec = get_task_spec("reid", dataset)
    spec.protocols["finetune"].schedule.max_steps = 2
    spec.protocols["finetune"].schedule.batch_size = 8
    spec.protocols["linear"].schedule.max_steps = 20
    for name in spec.protocols:
        spec.protocols[name].params["input_size"] = [64, 32]  # tiny test resolution
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


@pytest.mark.parametrize("dataset", ["market1501", "msmt17"])
@pytest.mark.parametrize("protocol", ["linear", "finetune"])
def test_runs_end_to_end_on_synthetic_world(tmp_path, synth_world, vit, dataset, protocol):
    ctx = _synth_context(tmp_path, synth_world, dataset, protocol, vit, visualize=2)
    result = get_task("reid").run(ctx)
    assert set(result.scores) >= {"rank1", "rank5", "rank10", "mAP", "mINP"}
    assert result.main_metric == "rank1" and 0.0 <= result.main_score <= 100.0
    assert result.extra["protocol"] == protocol and result.extra["protocol_kind"] == protocol
    assert result.extra["steps"] == (20 if protocol == "linear" else 2)
    assert result.extra["loss_if_collapsed"] > 0
    queries, gallery = ctx.data.splits["query"], ctx.data.splits["gallery"]
    assert result.n_samples["query"] == {"original": len(queries), "effective": len(queries)}
    with np.load(result.predictions[0]) as preds:
        assert preds["distmat"].shape == (len(queries), len(gallery))
        assert preds["q_camids"].tolist() == [r["camid"] for r in queries]
    assert evaluate_reid_file(result.predictions[0]) == result.scores  # the file is the score
    assert len(list((ctx.out_dir / "vis").glob("*.png"))) == 2
    if dataset == "msmt17":  # TransReID's train = list_train + list_val
        expected = len(ctx.data.splits["train"]) + len(ctx.data.splits["val"])
        assert result.n_samples["train"]["original"] == expected


def test_linear_protocol_caches_features_is_deterministic_and_learns(tmp_path, market_like, vit):
    first = get_task("reid").run(_context(tmp_path, market_like, "linear", vit))
    cached = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 3  # train, query, gallery features of this checkpoint
    second = get_task("reid").run(_context(tmp_path, market_like, "linear", vit))
    assert sorted((tmp_path / "cache").glob("*.pt")) == cached
    assert first.scores == second.scores
    # colour-coded identities are easy: even a random ViT's features + a trained head retrieve them
    assert first.scores["mAP"] > 50.0
