"""The fine-tune loop's ``--logger`` sinks: TensorBoard events of a tiny fit (per-step loss, lr, samples/s,
data-wait share; per-epoch loss and selection score) and of a whole unit (final scores), read back with
TensorBoard's reader; logging changes no number; without ``jsonl`` no finetune_log.jsonl."""

import math

import pytest
import torch
from torch import nn

from saip_bench import logsinks
from saip_bench.backbones import create_backbone
from saip_bench.specs import Schedule, get_task_spec
from saip_bench.tasks import common
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.utils import seed_everything
from tests.tasks.test_parsing import make_lip_like
from tests.test_logsinks import read_scalars


def toy_fit(out, loggers, selector=None):
    """3 epochs x 3 steps of a dropout MLP (as tests/tasks/test_fit_resume.py), with ``loggers``."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    data = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))

    def batches(epoch):
        for start in range(0, 12, 4):
            yield data[start:start + 4]

    schedule = Schedule(epochs=3, batch_size=4, lr=0.05, optimizer="adamw")
    optimizer = common.build_optimizer(common.schedule_param_groups(None, model, schedule), schedule)
    with logsinks.RunLog(out, loggers, name="toy", enabled=True) as run_log:
        checkpoint = common.FitCheckpoint(out / common.FIT_STATE, lambda: "unit", 1,
                                          out / common.FIT_LOG if run_log.jsonl else None, selector,
                                          run_log=run_log, metric="mAP")
        return common.fit_loop(model, batches, lambda x: model(x).pow(2).mean(), schedule, optimizer, 3,
                               amp=False, show_progress=False, checkpoint=checkpoint, on_epoch_end=selector,
                               log_every=2)


def test_fit_loop_writes_step_and_epoch_scalars(tmp_path):
    scores = iter([0.5, 0.7, 0.6])
    selector = common.BestEpoch([nn.Linear(1, 1)], lambda: next(scores), "max")
    history = toy_fit(tmp_path / "tb", ["jsonl", "tensorboard"], selector)
    plain = toy_fit(tmp_path / "plain", ["jsonl"])
    assert history["losses"] == plain["losses"]  # logging changes no number
    assert not list((tmp_path / "plain").glob(logsinks.EVENTS_GLOB))
    scalars = read_scalars(tmp_path / "tb")
    assert {"train/loss", "train/lr", "train/samples_per_s", "train/data_wait_share", "epoch/loss",
            "epoch/lr", "epoch/wall_s", "val/mAP"} == set(scalars)
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 10))
    for (_, logged), loss in zip(scalars["train/loss"], history["losses"], strict=True):
        assert math.isclose(logged, loss, rel_tol=1e-6)
    assert [step for step, _ in scalars["epoch/loss"]] == [3, 6, 9]
    assert [value for _, value in scalars["val/mAP"]] == pytest.approx([0.5, 0.7, 0.6])
    assert all(value > 0 for _, value in scalars["train/samples_per_s"])
    assert all(0 <= value <= 1 for _, value in scalars["train/data_wait_share"])
    assert (tmp_path / "tb" / common.FIT_LOG).is_file()


@pytest.fixture(scope="module")
def lip_like(tmp_path_factory):
    return make_lip_like(tmp_path_factory.mktemp("lip_like"))


def test_unit_logs_final_scores_and_no_jsonl_when_left_out(lip_like, tmp_path):
    spec = get_task_spec("parsing", "lip").model_copy(deep=True)
    protocol = spec.protocols["finetune"]
    protocol.schedule.max_steps = 3
    protocol.schedule.batch_size = 4
    protocol.params["input_size"] = [64, 48]
    protocol.params.setdefault("head", {})["channels"] = 16
    seed_everything(0)
    ctx = UnitContext(spec=spec, protocol="finetune", backbone=create_backbone("vit_tiny", (64, 48)),
                      data=lip_like, out_dir=tmp_path, cache_dir=tmp_path / "cache", show_progress=False,
                      amp=False, bootstrap_resamples=0, loggers=("tensorboard",))
    result = get_task("parsing").run(ctx)
    assert ctx.run_log is None  # closed and dropped once the unit is scored
    assert not (tmp_path / common.FIT_LOG).exists()
    scalars = read_scalars(tmp_path)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    for name, value in result.scores.items():
        assert scalars[f"final/{name}"] == [(3, pytest.approx(value, rel=1e-6))], name
