"""The trainer's ``--logger`` sinks: TensorBoard events of a few pretraining steps hold every logged term
at every step, numbers equal to log.jsonl's and to a run without TensorBoard; jsonl can be left out."""

import json
import math

import pytest
import torch

from saip_bench import logsinks
from saip_bench.pretrain.trainer import Trainer
from tests.test_logsinks import read_scalars

from ._micro import micro_saip, micro_train_config


def _fit(root, out, loggers, steps=3, stop_after=None):
    torch.manual_seed(0)
    trainer = Trainer(micro_saip(), micro_train_config(steps=steps, checkpoint_every=2), root, out, seed=3,
                      progress=False, loggers=loggers, stop_after=stop_after)
    return trainer.fit()


def _jsonl(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_pretraining_writes_readable_event_files(pretrain_root, tmp_path):
    plain = _fit(pretrain_root, tmp_path / "plain", ["jsonl"])
    logged = _fit(pretrain_root, tmp_path / "tb", ["jsonl", "tensorboard"])
    assert not list((tmp_path / "plain").glob(logsinks.EVENTS_GLOB))
    rows = _jsonl(tmp_path / "tb")
    scalars = read_scalars(tmp_path / "tb")
    terms = {k for k in rows[0] if k != "step"}
    assert {"loss", "lr", "grad_norm", "images_per_s", "time/data_wait_s", "loss/csm_rep",
            "loss/csr"} <= terms
    assert set(scalars) == terms | {"time/data_wait_share"}
    for tag in scalars:
        assert [step for step, _ in scalars[tag]] == [1, 2, 3], tag
    for row in rows:  # the same numbers as the JSON lines (event files hold float32)
        step = int(row["step"])
        assert math.isclose(dict(scalars["loss"])[step], row["loss"], rel_tol=1e-6)
        assert math.isclose(dict(scalars["lr"])[step], row["lr"], rel_tol=1e-6)
    assert all(0.0 <= value <= 1.0 for _, value in scalars["time/data_wait_share"])
    # logging changes no number: same losses as the run without TensorBoard
    assert [h["loss"] for h in logged.history] == [h["loss"] for h in plain.history]
    assert [r["grad_norm"] for r in rows] == [r["grad_norm"] for r in _jsonl(tmp_path / "plain")]


def test_resumed_pretraining_events_never_repeat_a_step(pretrain_root, tmp_path):
    with pytest.raises(KeyboardInterrupt):  # killed after step 3: the step-2 checkpoint is the last one
        _fit(pretrain_root, tmp_path, ["tensorboard"], steps=4, stop_after=3)
    _fit(pretrain_root, tmp_path, ["tensorboard"], steps=4)
    assert [step for step, _ in read_scalars(tmp_path)["loss"]] == [1, 2, 3, 4]
    assert not (tmp_path / "log.jsonl").exists()  # jsonl not among the loggers
