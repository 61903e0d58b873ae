"""Issue #27 items 2 and 3: the divergence guard keeps a checkpoint that is good, a rerun resumes by
default (a fresh start needs ``overwrite``), and ``log.jsonl`` never repeats a step."""

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from saip_bench.errors import TrainingError, UserError
from saip_bench.pretrain.base import PretrainMethod
from saip_bench.pretrain.trainer import Trainer, init_distributed
from tests.ranks import free_port, leave_group, run_ranks

from ._micro import micro_saip, micro_train_config, micro_vit


def _trainer(root, out, method=None, **kw):
    options = {k: kw.pop(k) for k in ("resume", "overwrite", "resume_from", "allow_config_change",
                                      "stop_after", "dist_info", "device") if k in kw}
    if method is None:
        torch.manual_seed(0)
        method = micro_saip()
    return Trainer(method, micro_train_config(**kw), root, out, seed=3, progress=False, **options)


def _fit(root, out, **kw):
    trainer = _trainer(root, out, **kw)
    return trainer.fit(), trainer


def _log_steps(out: Path) -> list[int]:
    return [int(json.loads(line)["step"]) for line in (out / "log.jsonl").read_text().splitlines()]


def _ckpt(out: Path) -> dict:
    return torch.load(out / "checkpoints/last.pt", weights_only=False)


def _max_abs_weight(state: dict) -> float:
    return max(float(v.abs().max()) for v in state["model"].values() if v.is_floating_point())


def _failure(out: Path) -> dict:
    return json.loads((out / "failure.json").read_text())


class _Bomb(PretrainMethod):
    """loss = mean(feats^2) * scale^2; after optimiser step ``bomb_step`` the scale jumps to ``value``:
    the weights of that step are diverged (finite but huge, or inf), which only the *next* loss shows."""

    name = "bomb_test"

    def __init__(self, bomb_step: int | None = None, value: float = 1e5) -> None:
        super().__init__(micro_vit(), {})
        self.scale = nn.Parameter(torch.ones(1))
        self.bomb_step, self.value = bomb_step, value

    def forward(self, views):
        feats = self.backbone(views["image"][:, :, :32, :16])
        loss = feats.pow(2).mean() * self.scale.pow(2).sum()
        return {"loss": loss, "loss/l2": loss.detach()}

    def on_after_step(self, step: int, total_steps: int) -> None:
        if step == self.bomb_step:
            with torch.no_grad():
                self.scale.fill_(self.value)


def _bomb(bomb_step=None, value=1e5):
    torch.manual_seed(0)
    return _Bomb(bomb_step, value)


# ------------------------------------------------------------------------------------ 2. the guard
def test_lr_1e6_keeps_the_checkpoint_from_before_the_divergence(pretrain_root, tmp_path):
    """The issue's ``--set lr=1e6``: step 2's update (warm-up makes step 1's lr 0) blows the weights up
    to ~1e6 and step 3's loss is NaN. The state of step 2 must not become the "last good checkpoint"."""
    with pytest.raises(TrainingError, match="non-finite") as info:
        _fit(pretrain_root, tmp_path, lr=1e6, checkpoint_every=1)
    state = _ckpt(tmp_path)
    assert state["step"] == 1
    assert _max_abs_weight(state) < 100
    failure = _failure(tmp_path)
    assert failure["checkpoint_step"] == 1 and failure["checkpoint"] == str(tmp_path / "checkpoints/last.pt")
    assert "step 1" in str(info.value) and "--resume-from" in str(info.value)
    assert not list((tmp_path / "checkpoints").glob("*candidate*"))


@pytest.mark.parametrize(
    ("bomb_step", "value", "every", "steps"),
    [
        (3, 1e5, 2, 6),  # finite but huge weights after a step between checkpoints (the lr 1.5)
        (4, 1e5, 2, 6),  # ... after a checkpoint step: the periodic checkpoint itself is diverged
        (4, float("inf"), 2, 6),  # non-finite weights at a checkpoint step
        (4, float("inf"), 2, 4),  # non-finite weights after the last step: the final save is refused
    ],
)
def test_a_diverged_state_never_replaces_the_good_checkpoint(pretrain_root, tmp_path, bomb_step, value,
                                                             every, steps):
    trainer = _trainer(pretrain_root, tmp_path, method=_bomb(bomb_step, value), checkpoint_every=every,
                       steps=steps)
    with pytest.raises(TrainingError):
        trainer.fit()
    state = _ckpt(tmp_path)
    assert state["step"] == 2
    assert float(state["model"]["scale"].abs().max()) < 2  # the weights from before the bomb
    assert _failure(tmp_path)["checkpoint_step"] == 2


def test_divergence_before_the_first_checkpoint_leaves_none_and_says_so(pretrain_root, tmp_path):
    trainer = _trainer(pretrain_root, tmp_path, lr=1e6, warmup_steps=0, checkpoint_every=100)
    with pytest.raises(TrainingError, match="no checkpoint"):
        trainer.fit()
    assert not (tmp_path / "checkpoints/last.pt").exists()
    failure = _failure(tmp_path)
    assert failure["checkpoint"] is None and failure["checkpoint_step"] is None


def test_resume_from_the_good_checkpoint_with_a_lower_lr(pretrain_root, tmp_path):
    with pytest.raises(TrainingError):
        _fit(pretrain_root, tmp_path, lr=1e6, checkpoint_every=1)
    good = tmp_path / "checkpoints/last.pt"
    old_hash = _ckpt(tmp_path)["config_hash"]
    # the same folder without the explicit flags: a clear error naming the ways out
    with pytest.raises(TrainingError) as info:
        _fit(pretrain_root, tmp_path, lr=1e-3)
    message = str(info.value)
    assert str(good) in message and "--overwrite" in message and "--out" in message
    assert "--allow-config-change" in message and "lr" in message
    with pytest.raises(TrainingError, match="--allow-config-change"):
        _fit(pretrain_root, tmp_path, lr=1e-3, resume_from=good)
    result, trainer = _fit(pretrain_root, tmp_path, lr=1e-3, resume_from=good, allow_config_change=True)
    assert result.step == 6 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert _log_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    state = _ckpt(tmp_path)
    assert state["config_hash"] == trainer.config_hash() != old_hash
    assert state["lineage"] == [
        {"resumed_from": str(good.resolve()), "step": 1, "config_changed_from": old_hash}
    ]
    again, _ = _fit(pretrain_root, tmp_path, lr=1e-3)  # the folder now holds the new configuration
    assert again.step == 6


def test_resume_from_refuses_another_method_or_backbone(pretrain_root, tmp_path):
    _fit(pretrain_root, tmp_path / "a", steps=2)
    trainer = _trainer(pretrain_root, tmp_path / "b", method=_bomb(),
                       resume_from=tmp_path / "a/checkpoints/last.pt", allow_config_change=True)
    with pytest.raises(TrainingError, match="saip"):
        trainer.fit()


def test_resume_from_another_folder_into_one_with_a_checkpoint_needs_overwrite(pretrain_root, tmp_path):
    _fit(pretrain_root, tmp_path / "a", steps=2)
    _fit(pretrain_root, tmp_path / "b", steps=2)
    source = tmp_path / "a/checkpoints/last.pt"
    kw = {"steps": 3, "resume_from": source, "allow_config_change": True}
    with pytest.raises(UserError, match="--overwrite"):
        _fit(pretrain_root, tmp_path / "b", **kw)
    result, _ = _fit(pretrain_root, tmp_path / "b", overwrite=True, **kw)
    assert result.step == 3 and _log_steps(tmp_path / "b") == [3]  # b's own log went with --overwrite
    with pytest.raises(UserError, match="would delete"):
        _fit(pretrain_root, tmp_path / "b", steps=4, resume_from=tmp_path / "b/checkpoints/last.pt",
             allow_config_change=True, overwrite=True)


def test_resume_from_the_folders_good_checkpoint_drops_its_unconfirmed_candidate(pretrain_root, tmp_path):
    with pytest.raises(KeyboardInterrupt):  # last.pt: step 2 (confirmed by step 3), candidate: step 3
        _fit(pretrain_root, tmp_path, stop_after=3, checkpoint_every=1)
    candidate = tmp_path / "checkpoints/candidate.pt"
    assert candidate.is_file() and _ckpt(tmp_path)["step"] == 2
    with pytest.raises(KeyboardInterrupt):
        _fit(pretrain_root, tmp_path, lr=5e-4, checkpoint_every=5, stop_after=1,
             resume_from=tmp_path / "checkpoints/last.pt", allow_config_change=True)
    assert not candidate.exists()  # a later rerun must not pick up the replaced run's newer state
    assert _log_steps(tmp_path) == [1, 2, 3]


def test_resume_from_flags_are_checked(pretrain_root, tmp_path):
    with pytest.raises(UserError, match="--resume-from"):
        _trainer(pretrain_root, tmp_path, allow_config_change=True)
    with pytest.raises(UserError, match="no checkpoint"):
        _trainer(pretrain_root, tmp_path, resume_from=tmp_path / "nope.pt")
    with pytest.raises(UserError, match="--overwrite"):
        _trainer(pretrain_root, tmp_path, resume=True, overwrite=True)


# ------------------------------------------------------------------------------- 3. resume by default
def test_a_rerun_resumes_by_default_and_matches_an_uninterrupted_run(pretrain_root, tmp_path):
    _, full_trainer = _fit(pretrain_root, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _fit(pretrain_root, tmp_path / "cut", stop_after=4, checkpoint_every=3)
    resumed, resumed_trainer = _fit(pretrain_root, tmp_path / "cut")  # no resume flag
    assert resumed.step == 6
    for key, value in full_trainer.method.state_dict().items():
        assert torch.equal(value, resumed_trainer.method.state_dict()[key]), key
    assert _log_steps(tmp_path / "cut") == [1, 2, 3, 4, 5, 6]


def test_killed_right_after_a_checkpoint_resumes_from_the_unconfirmed_one(pretrain_root, tmp_path):
    """Killed after step 3 wrote its checkpoint but before step 4 confirmed it: the rerun continues from
    step 3 (and step 4's loss confirms it), bit-identical to an uninterrupted run."""
    full, full_trainer = _fit(pretrain_root, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _fit(pretrain_root, tmp_path / "cut", stop_after=3, checkpoint_every=3)
    resumed, resumed_trainer = _fit(pretrain_root, tmp_path / "cut", resume=True)
    assert resumed.step == 6
    for key, value in full_trainer.method.state_dict().items():
        assert torch.equal(value, resumed_trainer.method.state_dict()[key]), key
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert _log_steps(tmp_path / "cut") == [1, 2, 3, 4, 5, 6]


def test_a_finished_run_rerun_does_nothing_and_reports_its_last_losses(pretrain_root, tmp_path):
    first, _ = _fit(pretrain_root, tmp_path, steps=3)
    again, _ = _fit(pretrain_root, tmp_path, steps=3)
    assert again.step == 3 and again.last["loss"] == first.last["loss"]
    assert _log_steps(tmp_path) == [1, 2, 3]


def test_an_incompatible_checkpoint_is_a_clear_error(pretrain_root, tmp_path):
    _fit(pretrain_root, tmp_path, steps=2)
    for kw in ({"steps": 2, "lr": 2e-3}, {"steps": 3}):
        with pytest.raises(TrainingError) as info:
            _fit(pretrain_root, tmp_path, **kw)
        message = str(info.value)
        assert str(tmp_path / "checkpoints/last.pt") in message
        assert "--overwrite" in message and "--out" in message
    assert _ckpt(tmp_path)["step"] == 2 and _log_steps(tmp_path) == [1, 2]  # nothing was touched


def test_another_seed_is_a_clear_error(pretrain_root, tmp_path):
    _fit(pretrain_root, tmp_path, steps=2)
    torch.manual_seed(0)
    trainer = Trainer(micro_saip(), micro_train_config(steps=2), pretrain_root, tmp_path, seed=4,
                      progress=False)
    with pytest.raises(TrainingError, match="seed") as info:
        trainer.fit()
    assert "--overwrite" in str(info.value)


def test_overwrite_starts_afresh(pretrain_root, tmp_path):
    _, full_trainer = _fit(pretrain_root, tmp_path / "full", steps=3)
    with pytest.raises(TrainingError):
        _fit(pretrain_root, tmp_path / "run", lr=1e6, checkpoint_every=1, steps=3)
    result, trainer = _fit(pretrain_root, tmp_path / "run", overwrite=True, steps=3)  # another lr: no error
    assert result.step == 3 and not (tmp_path / "run/failure.json").exists()
    assert _log_steps(tmp_path / "run") == [1, 2, 3]
    for key, value in full_trainer.method.state_dict().items():
        assert torch.equal(value, trainer.method.state_dict()[key]), key


# ------------------------------------------------------------------------------- 3. the log never repeats
def test_resume_truncates_the_log_to_the_checkpoint(pretrain_root, tmp_path):
    with pytest.raises(KeyboardInterrupt):  # log has steps 1-5, the checkpoint step 3
        _fit(pretrain_root, tmp_path, stop_after=5, checkpoint_every=3)
    assert _log_steps(tmp_path) == [1, 2, 3, 4, 5]
    _fit(pretrain_root, tmp_path, resume=True)
    assert _log_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


def test_a_fresh_start_drops_the_log_of_a_run_without_checkpoint(pretrain_root, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _fit(pretrain_root, tmp_path, stop_after=2, checkpoint_every=3)
    assert _log_steps(tmp_path) == [1, 2] and not (tmp_path / "checkpoints/last.pt").exists()
    _fit(pretrain_root, tmp_path)
    assert _log_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


# -------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    info, device = init_distributed(torch.device("cpu"))
    report: dict = {}
    config = {"steps": 4, "batch_size": 2, "checkpoint_every": 2}
    trainer = _trainer(root, out, method=_bomb(3), dist_info=info, device=device, **config)
    try:
        trainer.fit()
    except TrainingError as exc:
        report["error"] = str(exc)
    trainer = _trainer(root, out, method=_bomb(None), dist_info=info, device=device, **config)
    report["step"] = trainer.fit().step  # resumes from step 2 by default
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    leave_group()


def test_ddp_guard_and_resume_take_the_same_path_on_every_rank(pretrain_root, tmp_path):
    run_ranks(_ddp_worker, args=(2, free_port(), str(pretrain_root), str(tmp_path)))
    os.environ.pop("WORLD_SIZE", None)
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "step 2" in report["error"] and report["step"] == 4
    assert _failure(tmp_path)["checkpoint_step"] == 2
    assert _log_steps(tmp_path) == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------- the API (export)
def test_api_resumes_by_default_records_lineage_and_overwrite_clears_the_export(pretrain_root, tmp_path):
    from saip_bench.pretrain import api

    from .test_api import TINY, TINY_SAIP

    common = {"progress": False, "method_overrides": TINY_SAIP, "seed": 1}
    tiny = {**TINY, "checkpoint_every": 2, "lr": 1e-3}
    with pytest.raises(KeyboardInterrupt):  # killed after step 2 wrote its (not yet confirmed) checkpoint
        api.run_training("saip", "vit_tiny", "quick", pretrain_root, tmp_path, steps=3, overrides=tiny,
                         stop_after=2, **common)
    path = api.pretrain("saip", "vit_tiny", "quick", pretrain_root, tmp_path, steps=3, overrides=tiny,
                        **common)
    assert _log_steps(tmp_path) == [1, 2, 3]
    first = json.loads(path.with_suffix(".json").read_text())
    assert first["step"] == 3 and "lineage" not in first
    # continue the finished run for 1 more step at a lower lr: an explicit config change
    ckpt = tmp_path / "checkpoints/last.pt"
    path = api.pretrain("saip", "vit_tiny", "quick", pretrain_root, tmp_path, steps=4,
                        overrides={**tiny, "lr": 5e-4}, resume_from=ckpt, allow_config_change=True, **common)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["step"] == 4 and meta["train_config"]["lr"] == 5e-4
    assert meta["lineage"] == [
        {"resumed_from": str(ckpt.resolve()), "step": 3, "config_changed_from": first["config_hash"]}
    ]
    assert _log_steps(tmp_path) == [1, 2, 3, 4]
    # overwrite: checkpoints, log and the old export go first; a failing fresh run leaves no stale export
    with pytest.raises(TrainingError, match="no checkpoint"):
        api.pretrain("saip", "vit_tiny", "quick", pretrain_root, tmp_path, steps=4,
                     overrides={**tiny, "lr": 1e6, "warmup_steps": 0}, overwrite=True, **common)
    assert not path.exists() and not path.with_suffix(".json").exists() and not ckpt.exists()
