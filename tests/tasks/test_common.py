import pytest
import torch
from PIL import Image

from saip_bench.backbones import create_backbone
from saip_bench.errors import DataFormatError
from saip_bench.specs import Schedule
from saip_bench.tasks import common


def test_load_rgb_names_corrupt_file(tmp_path):
    good = tmp_path / "a.jpg"
    Image.new("RGB", (8, 4), (255, 0, 0)).save(good)
    assert common.load_rgb(good).size == (8, 4)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataFormatError, match="b.jpg"):
        common.load_rgb(bad)
    with pytest.raises(DataFormatError, match="missing.jpg"):
        common.load_rgb(tmp_path / "missing.jpg")


def test_lr_factor_warmup_then_cosine():
    schedule = Schedule(epochs=10, batch_size=1, lr=1.0, warmup_epochs=1, scheduler="cosine")
    assert common.lr_factor(0, 100, 10, schedule) == pytest.approx(0.1)
    assert common.lr_factor(9, 100, 10, schedule) == pytest.approx(1.0)
    assert common.lr_factor(55, 100, 10, schedule) == pytest.approx(0.5)
    assert common.lr_factor(100, 100, 10, schedule) == pytest.approx(0.0)
    step = Schedule(epochs=10, batch_size=1, lr=1.0, scheduler="step", milestones=[5, 8])
    assert common.lr_factor(60, 100, 0, step) == pytest.approx(0.1)
    assert common.lr_factor(90, 100, 0, step) == pytest.approx(0.01)


def test_param_groups_no_decay_and_layer_decay():
    backbone = create_backbone("vit_tiny")
    head = torch.nn.Linear(192, 3)
    groups = common.param_groups(backbone, head, weight_decay=0.05, layer_decay=0.5)
    by_key = {(g["weight_decay"], g["lr_scale"]): g for g in groups}
    assert any(wd == 0.0 for wd, _ in by_key)
    scales = sorted({scale for _, scale in by_key})
    assert scales[0] == pytest.approx(0.5**13) and scales[-1] == pytest.approx(1.0)
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in backbone.parameters()) + 192 * 3 + 3


def test_fit_loop_reduces_loss_and_respects_max_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    schedule = Schedule(epochs=50, batch_size=16, lr=0.05, scheduler="constant", max_steps=120)
    optimizer = common.build_optimizer(common.param_groups(None, model, 0.0), schedule)

    def batches(epoch):
        for i in range(0, 64, 16):
            yield x[i : i + 16], y[i : i + 16]

    history = common.fit_loop(model, batches, lambda b: torch.nn.functional.mse_loss(model(b[0]), b[1]),
                              schedule, optimizer, steps_per_epoch=4, amp=False, show_progress=False)
    assert history["steps"] == 120
    assert history["losses"][-1] < 0.1 * history["losses"][0]


def test_cached_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    first = common.cached(tmp_path / "f.pt", compute)
    second = common.cached(tmp_path / "f.pt", compute)
    assert torch.equal(first["x"], second["x"]) and len(calls) == 1


def test_limit_is_seeded_subset():
    records = [{"i": i} for i in range(10)]
    a = common.limit(records, 4, seed=1)
    assert a == common.limit(records, 4, seed=1) and len(a) == 4
    assert [r["i"] for r in a] == sorted(r["i"] for r in a)
    assert common.limit(records, None, 0) == records


def test_fit_summary_reports_last_loss_or_none():
    assert common.fit_summary({"steps": 3, "losses": [3.0, 2.0, 1.5], "fit_seconds": 0.5}) == {
        "steps": 3, "final_loss": 1.5, "fit_seconds": 0.5}
    assert common.fit_summary({"steps": 0, "losses": [], "fit_seconds": 0.0})["final_loss"] is None


def test_epoch_batches_keep_one_loader_and_the_key_order():
    """``epoch_batches``: epoch e yields exactly its keys' batches, in order, from one loader whose
    workers live across epochs (a worker pool per epoch starved the GPU on few-batch epochs)."""
    seen_epochs: list[int] = []

    def epoch_keys(epoch: int):
        seen_epochs.append(epoch)
        return ([(epoch, step, i) for i in range(3)] for step in range(2))

    def collect(num_workers: int) -> list[list[tuple[int, int, int]]]:
        seen_epochs.clear()
        batches = common.epoch_batches(lambda key: torch.tensor(key), epoch_keys, 2,
                                       lambda items: torch.stack(items), num_workers, "cpu")
        return [[tuple(row) for row in batch.tolist()] for epoch in range(3) for batch in batches(epoch)]

    expected = [[(e, s, i) for i in range(3)] for e in range(3) for s in range(2)]
    assert collect(0) == expected
    assert seen_epochs[:3] == [0, 1, 2]  # one chained sampler, drawn lazily
    assert collect(2) == expected
