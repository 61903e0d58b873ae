"""Long fine-tunes as first-class runs (issue 19, item 4): per-epoch log, resume checkpoints, exact resume,
foreign checkpoints ignored, ``keep_finetuned`` weights."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from saip_bench.backbones import create_backbone
from saip_bench.data.records import DatasetSplits
from saip_bench.pretrain.export import load_backbone
from saip_bench.specs import Schedule, get_task_spec
from saip_bench.tasks import common
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.utils import seed_everything
from tests.tasks.test_parsing import make_lip_like


class Interrupted(Exception):
    """Stands for the kill of a unit after its checkpoint of epoch ``k``."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    save = common.FitCheckpoint.save

    def save_then_die(self, state):
        save(self, state)
        if state["epoch"] == epoch:
            raise Interrupted(f"killed after epoch {epoch}")

    monkeypatch.setattr(common.FitCheckpoint, "save", save_then_die)


# -- fit_loop on a toy model ---------------------------------------------------------------------------


def toy_fit(out, unit="unit-a", every=1, on_epoch_end=None, selector=None):
    """3 epochs x 3 steps of a dropout MLP; batches drawn from a generator advanced across epochs."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))

    def batches(epoch):
        order = torch.randperm(12, generator=generator)
        for start in range(0, 12, 4):
            yield data[order[start:start + 4]]

    schedule = Schedule(epochs=3, batch_size=4, lr=0.05, optimizer="adamw")
    optimizer = common.build_optimizer(common.schedule_param_groups(None, model, schedule), schedule)
    checkpoint = common.FitCheckpoint(out / common.FIT_STATE, lambda: unit, every, out / common.FIT_LOG,
                                      selector)
    history = common.fit_loop(model, batches, lambda x: model(x).pow(2).mean(), schedule, optimizer, 3,
                              amp=False, show_progress=False, checkpoint=checkpoint,
                              on_epoch_end=on_epoch_end)
    return history, model, checkpoint


def test_fit_loop_resumes_exactly_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    reference, ref_model, _ = toy_fit(tmp_path / "ref")
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        toy_fit(tmp_path / "run")
    monkeypatch.undo()
    assert (tmp_path / "run" / common.FIT_STATE).is_file()
    history, model, checkpoint = toy_fit(tmp_path / "run")
    assert "resuming from epoch 1" in capsys.readouterr().err
    assert checkpoint.resumed_from == 1
    assert history["losses"] == reference["losses"] and history["steps"] == 9
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_foreign_checkpoint_is_ignored_with_a_message(tmp_path, monkeypatch, capsys):
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        toy_fit(tmp_path, unit="unit-a")
    monkeypatch.undo()
    reference, _, _ = toy_fit(tmp_path / "fresh", unit="unit-b")
    history, _, checkpoint = toy_fit(tmp_path, unit="unit-b")  # other settings, same folder
    err = capsys.readouterr().err
    assert "field 'fingerprint'" in err and "ignored" in err and str(tmp_path) in err.replace("\n", "")
    assert checkpoint.resumed_from is None
    assert history["losses"] == reference["losses"]  # trained from epoch 0


def test_per_epoch_log_has_loss_lr_val_and_wall_time(tmp_path):
    scores = iter([0.5, 0.7, 0.6])
    selector = common.BestEpoch([nn.Linear(1, 1)], lambda: next(scores), "max")
    history, _, _ = toy_fit(tmp_path, on_epoch_end=selector, selector=selector)
    lines = [json.loads(line) for line in (tmp_path / common.FIT_LOG).read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert [line["step"] for line in lines] == [3, 6, 9]
    assert [line["val"] for line in lines] == [0.5, 0.7, 0.6]
    assert lines[0]["loss"] == pytest.approx(float(np.mean(history["losses"][:3])))
    assert all(line["lr"] >= 0 and line["wall_s"] >= 0 for line in lines)


# -- whole units: one dense task, one single-person task -------------------------------------------------


def run_parsing(data, out, **overrides):
    spec = get_task_spec("parsing", "lip").model_copy(deep=True)
    protocol = spec.protocols["finetune"]
    protocol.schedule.max_steps = 9  # 12 images / batch 4 = 3 steps per epoch: 3 epochs
    protocol.schedule.batch_size = 4
    protocol.params["input_size"] = [64, 48]
    protocol.params.setdefault("head", {})["channels"] = 16
    seed_everything(0)
    backbone = create_backbone("vit_tiny", (64, 48))
    ctx = UnitContext(spec=spec, protocol="finetune", backbone=backbone, data=data, out_dir=out,
                      cache_dir=out / "cache", show_progress=False, amp=False, **overrides)
    return get_task("parsing").run(ctx)


@pytest.fixture(scope="module")
def lip_like(tmp_path_factory):
    return make_lip_like(tmp_path_factory.mktemp("lip_like"))


def log_lines(out):
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
            for line in (out / common.FIT_LOG).read_text().splitlines()]


def test_parsing_unit_killed_after_epoch_2_resumes_to_the_same_scores(lip_like, tmp_path, monkeypatch,
                                                                      capsys):
    reference = run_parsing(lip_like, tmp_path / "ref")
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run_parsing(lip_like, tmp_path / "run")
    monkeypatch.undo()
    resumed = run_parsing(lip_like, tmp_path / "run")
    assert "resuming from epoch 2" in capsys.readouterr().err
    assert resumed.extra["resumed_from_epoch"] == 2 and "resumed_from_epoch" not in reference.extra
    assert resumed.scores == reference.scores
    assert resumed.extra["losses"] == reference.extra["losses"] and resumed.extra["steps"] == 9
    assert log_lines(tmp_path / "run") == log_lines(tmp_path / "ref")
    assert [line["epoch"] for line in log_lines(tmp_path / "ref")] == [1, 2, 3]
    assert not (tmp_path / "run" / common.FIT_STATE).exists()  # a finished unit drops its resume state


def _person(path, pid, cam, rng):
    colour = np.array([(pid * 67) % 255, (pid * 131) % 255, (pid * 29) % 255], dtype=np.float64)
    image = np.clip(colour + rng.normal(0, 20, size=(64, 32, 3)) + cam * 5, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return {"path": str(path), "pid": pid, "camid": cam}


@pytest.fixture(scope="module")
def market_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("market_like")
    rng = np.random.default_rng(0)
    splits = {"train": [], "query": [], "gallery": []}
    for pid in range(1, 9):
        for k in range(4):
            splits["train"].append(_person(root / f"tr_{pid}_{k}.png", pid, k % 3, rng))
    for pid in range(20, 24):
        splits["query"].append(_person(root / f"q_{pid}.png", pid, 0, rng))
        for k in range(2):
            splits["gallery"].append(_person(root / f"g_{pid}_{k}.png", pid, k + 1, rng))
    return DatasetSplits("market1501", "default", root, splits, {})


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny", img_size=(64, 32))


def run_reid(data, backbone, out, **overrides):
    spec = get_task_spec("reid", "market1501").model_copy(deep=True)
    protocol = spec.protocols["finetune"]
    protocol.schedule.max_steps = 6  # 32 images, batches of 16 (4 ids x 4): 2 steps per epoch, 3 epochs
    protocol.schedule.batch_size = 16
    protocol.selection = "best_test"  # the selection state must survive the restart too
    protocol.params["input_size"] = [64, 32]
    seed_everything(0)
    ctx = UnitContext(spec=spec, protocol="finetune", backbone=copy.deepcopy(backbone), data=data,
                      out_dir=out, cache_dir=out / "cache", show_progress=False, amp=False,
                      bootstrap_resamples=0, **overrides)
    return get_task("reid").run(ctx), ctx


def test_reid_unit_resumes_exactly_and_keeps_its_finetuned_weights(market_like, vit, tmp_path, monkeypatch):
    reference, _ = run_reid(market_like, vit, tmp_path / "ref", keep_finetuned=True)
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        run_reid(market_like, vit, tmp_path / "run", keep_finetuned=True)
    monkeypatch.undo()
    resumed, ctx = run_reid(market_like, vit, tmp_path / "run", keep_finetuned=True)
    assert resumed.extra["resumed_from_epoch"] == 1
    assert resumed.scores == reference.scores
    for key in ("final_loss", "steps", "selected_epoch", "selected_score", "epochs_evaluated"):
        assert resumed.extra[key] == reference.extra[key], key
    assert reference.extra["epochs_evaluated"] == 3
    assert log_lines(tmp_path / "run") == log_lines(tmp_path / "ref")
    assert all(line["val"] is not None for line in log_lines(tmp_path / "run"))
    # --keep-finetuned: loadable weights, named for the record, equal to the uninterrupted run's
    kept, ref_kept = resumed.extra["finetuned"], reference.extra["finetuned"]
    for what in ("backbone", "head"):  # the files' JSON headers are unordered: compare the tensors
        ours, theirs = load_file(kept[what]), load_file(ref_kept[what])
        assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours), what
        assert len(kept[f"{what}_sha256"]) == 16
    loaded = load_backbone(kept["backbone"])
    for name, value in ctx.backbone.export_state_dict().items():
        assert torch.equal(loaded.export_state_dict()[name], value.cpu()), name
    head = load_file(kept["head"])
    assert "classifier.weight" in head and all(torch.isfinite(v).all() for v in head.values())
    assert json.loads((tmp_path / "run" / "finetuned_backbone.json").read_text())["spec"] == ctx.spec.key


# -- --keep-finetuned through the commands: the record names the weights --------------------------------


def test_keep_finetuned_flag_reaches_the_unit_and_the_record_names_the_weights(tmp_path, monkeypatch, capsys):
    from saip_bench.bench import runner as runner_module
    from saip_bench.cli import main
    from saip_bench.commands.bench import add_bench_arguments
    from saip_bench.tasks.base import UnitResult
    from tests.bench.fakes import FAKE_SPECS, FakePretrainer, FakeTask, fake_loader, fake_read
    from tests.commands.test_eval import make_world

    original = runner_module.BenchRunner.__init__
    seen = []

    def init(self, config, hooks=None):
        hooks = runner_module.BenchHooks(specs=FAKE_SPECS, get_task=lambda name: FakeTask(),
                                         read_dataset=fake_read, pretrainer=FakePretrainer(),
                                         backbone_loader=fake_loader, method_unsupported=lambda m, b: None)
        original(self, config, hooks)

    fake_run = FakeTask.run

    def run(self, ctx: UnitContext) -> UnitResult:
        seen.append(ctx.keep_finetuned)
        result = fake_run(self, ctx)
        if ctx.keep_finetuned:  # what Task.run adds (save_finetuned, tested on reid above)
            result.extra["finetuned"] = {"backbone": str(ctx.out_dir / "finetuned_backbone.safetensors")}
        return result

    monkeypatch.setattr(runner_module.BenchRunner, "__init__", init)
    monkeypatch.setattr(FakeTask, "run", run)
    from saip_bench.backbones import BACKBONES

    monkeypatch.setitem(BACKBONES._items, "tiny", fake_loader)  # the fakes' backbone passes eval's name check
    monkeypatch.setitem(BACKBONES._meta, "tiny", {})
    make_world(tmp_path / "world")
    argv = ["eval", "--method", "saip", "--backbone", "tiny", "--task", "reid", "--dataset", "market1501",
            "--protocol", "linear", "--data-root", str(tmp_path / "world"), "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--json", "--keep-finetuned"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert seen == [True]
    assert record["provenance"]["finetuned"]["backbone"].endswith("finetuned_backbone.safetensors")
    import argparse

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)  # bench and run_bench.py share these arguments
    assert parser.parse_args(["--keep-finetuned"]).keep_finetuned
    assert not parser.parse_args([]).keep_finetuned
