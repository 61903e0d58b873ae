import json
import math

import pytest
import torch

from saip_bench.errors import SpecError, TrainingError, UserError
from saip_bench.pretrain.base import PretrainMethod
from saip_bench.pretrain.trainer import TrainConfig, Trainer, load_preset, lr_at, param_groups

from ._micro import micro_saip, micro_train_config, micro_vit


def test_lr_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0, 0.0) == 0.0
    assert lr_at(5, 100, 10, 1.0, 0.0) == 0.5
    assert lr_at(10, 100, 10, 1.0, 0.0) == 1.0
    assert math.isclose(lr_at(55, 100, 10, 1.0, 0.0), 0.5)
    assert math.isclose(lr_at(100, 100, 10, 1.0, 0.1), 0.1)


def test_param_groups_skip_bias_norm_and_named():
    method = micro_saip()
    decay, no_decay = param_groups(method, 0.05)
    no_decay_ids = {id(p) for p in no_decay["params"]}
    named = dict(method.student.named_parameters())
    assert id(named["backbone.body.pos_embed"]) in no_decay_ids
    assert id(named["backbone.body.blocks.0.norm1.weight"]) in no_decay_ids
    assert id(named["backbone.body.blocks.0.attn.qkv.bias"]) in no_decay_ids
    assert id(named["backbone.body.blocks.0.attn.qkv.weight"]) not in no_decay_ids
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    assert not teacher_ids & ({id(p) for p in decay["params"]} | no_decay_ids)


def test_presets_validate_and_unknown_is_clear():
    for preset in ("quick", "paper"):
        train_cfg, _ = load_preset("saip", preset)
        assert isinstance(train_cfg, TrainConfig)
    paper, _ = load_preset("saip", "paper")
    assert paper.epochs == 300 and paper.batch_size * paper.accum_steps * 8 == 2048 and paper.blr == 2.5e-4
    with pytest.raises(UserError, match="known presets"):
        load_preset("saip", "nope")
    with pytest.raises(SpecError):
        load_preset("saip", "quick", {"batch_sise": 3})


def _fit(root, out, **kw):
    stop_after = kw.pop("stop_after", None)
    resume = kw.pop("resume", False)
    torch.manual_seed(0)
    method = micro_saip()
    trainer = Trainer(
        method,
        micro_train_config(**kw),
        root,
        out,
        seed=3,
        resume=resume,
        progress=False,
        stop_after=stop_after,
    )
    return trainer.fit(), method


def test_loss_goes_down(pretrain_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SAIP_AMP", "force")  # the bf16 path even where this CPU would emulate it
    result, _ = _fit(pretrain_root, tmp_path, steps=14, lr=2e-3, amp=True, checkpoint_every=100)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 14
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    terms = set(result.history[0])
    assert {"loss/csm_rep", "loss/csm_attn", "loss/csr", "loss/css_inst", "loss/css_roi"} <= terms
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 15))


def test_kill_and_resume_matches_uninterrupted(pretrain_root, tmp_path):
    full, full_method = _fit(pretrain_root, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):  # "killed" during step 5: only the step-3 checkpoint survives
        _fit(pretrain_root, tmp_path / "cut", stop_after=4, checkpoint_every=3)
    assert torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=False)["step"] == 3
    resumed, resumed_method = _fit(pretrain_root, tmp_path / "cut", resume=True)
    assert resumed.step == full.step == 6
    full_state, resumed_state = full_method.state_dict(), resumed_method.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


class _NaNAtStep3(PretrainMethod):
    name = "nan_test"

    def __init__(self) -> None:
        super().__init__(micro_vit(), {})
        self.calls = 0

    def forward(self, views):
        self.calls += 1
        feats = self.backbone(views["image"][:, :, :32, :16])
        loss = feats.pow(2).mean()
        if self.calls == 3:
            loss = loss * float("nan")
        return {"loss": loss, "loss/l2": loss.detach()}


def test_nan_guard_stops_and_keeps_last_good_state(pretrain_root, tmp_path):
    """Step 3's loss (computed on the state of step 2) is NaN: the state of step 2 is not good, so the
    checkpoint kept is step 1's, the last one whose own loss passed the guard."""
    method = _NaNAtStep3()
    trainer = Trainer(
        method, micro_train_config(checkpoint_every=1), pretrain_root, tmp_path, progress=False
    )
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.fit()
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=False)
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    failure = json.loads((tmp_path / "failure.json").read_text())
    assert failure["step"] == 2 and failure["checkpoint_step"] == 1


def test_gradient_accumulation_consumes_accum_micro_batches_per_step(pretrain_root, tmp_path):
    method = micro_saip()
    trainer = Trainer(
        method,
        micro_train_config(steps=2, batch_size=2, accum_steps=2, checkpoint_every=100),
        pretrain_root,
        tmp_path,
        progress=False,
    )
    seen = []
    original = trainer.method.make_views

    def spy(batch, generator):
        seen.append(batch["index"].tolist())
        return original(batch, generator)

    trainer.method.make_views = spy  # type: ignore[method-assign]
    result = trainer.fit()
    assert result.step == 2 and len(seen) == 4 and all(len(s) == 2 for s in seen)
    assert trainer.effective_batch == 4
    assert len({i for s in seen[:2] for i in s}) == 4  # one step = 4 distinct samples


def test_trainer_config_hash_and_export_carry_the_precision_that_ran(monkeypatch, pretrain_root, tmp_path):
    """A bf16 request that fell back to fp32 is recorded as fp32, so its config hash differs from bf16's."""
    monkeypatch.delenv("SAIP_AMP", raising=False)
    hashes = {}
    for native in (False, True):
        monkeypatch.setattr("saip_bench.pretrain.trainer.resolve_amp",
                            lambda requested, device, native=native: requested and native)
        trainer = Trainer(micro_saip(), micro_train_config(amp=True), pretrain_root, tmp_path / str(native),
                          progress=False)
        assert trainer.amp is native and trainer.config.amp is native and trainer.amp_requested is True
        hashes[native] = trainer.config_hash()
    assert hashes[False] != hashes[True]


def test_freeze_patch_embed_keeps_the_random_projection(pretrain_root, tmp_path):
    torch.manual_seed(0)  # as _fit does, so these are the run's initial weights
    start = micro_saip().backbone.body
    initial = {k: v.clone() for k, v in start.patch_embed.state_dict().items()}
    initial_qkv = start.blocks[0].attn.qkv.weight.detach().clone()
    result, method = _fit(pretrain_root, tmp_path, steps=3, lr=2e-3, checkpoint_every=100,
                          freeze_patch_embed=True)
    assert len(result.history) == 3
    body = method.backbone.body
    for key, value in body.patch_embed.state_dict().items():
        assert torch.equal(value, initial[key]), key
    assert not any(p.requires_grad for p in body.patch_embed.parameters())
    _, moved = _fit(pretrain_root, tmp_path / "free", steps=3, lr=2e-3, checkpoint_every=100)
    assert not torch.equal(moved.backbone.body.patch_embed.proj.weight, initial["proj.weight"])
    assert not torch.equal(body.blocks[0].attn.qkv.weight, initial_qkv)  # the rest of the ViT still trains


def test_freeze_patch_embed_needs_a_vit():
    from types import SimpleNamespace

    from saip_bench.pretrain.trainer import freeze_patch_embedding

    with pytest.raises(SpecError, match="needs a ViT"):
        freeze_patch_embedding(SimpleNamespace(family="cnn", name="resnet18"))


def test_freeze_patch_embed_changes_the_config_hash_only_when_on(pretrain_root, tmp_path):
    def trainer(**kw):
        torch.manual_seed(0)
        return Trainer(micro_saip(), micro_train_config(steps=1, **kw), pretrain_root, tmp_path, seed=3,
                       progress=False)

    off = trainer().config_hash()
    assert trainer(freeze_patch_embed=False).config_hash() == off
    assert trainer(freeze_patch_embed=True).config_hash() != off


def test_step_terms_come_back_in_one_packed_read_with_the_guard_verdict(pretrain_root, tmp_path):
    """``_read_step_terms``: the loss terms, grad norm and the guard's verdict (non-finite or too large
    loss or norm) in one read; the verdict is what the trainer acts on."""
    trainer = Trainer(micro_saip(), micro_train_config(steps=2), pretrain_root, tmp_path, seed=3,
                      progress=False)
    ok = {"loss": torch.tensor(2.0, dtype=torch.float64), "loss/csr": torch.tensor(0.5, dtype=torch.float64)}
    sums, norm, healthy = trainer._read_step_terms(ok, torch.tensor(3.0, dtype=torch.float64))
    assert sums == {"loss": 2.0, "loss/csr": 0.5} and norm == 3.0 and healthy
    for loss, grad in ((float("nan"), 1.0), (1.0, float("inf")), (2e6, 1.0)):
        terms = {"loss": torch.tensor(loss, dtype=torch.float64)}
        assert not trainer._read_step_terms(terms, torch.tensor(grad, dtype=torch.float64))[2]


def test_compile_trains_the_same_and_resumes_either_way(pretrain_root, tmp_path, monkeypatch):
    """``compile: true`` (regional torch.compile of the backbone's blocks) is a speed switch: same losses and
    weights as eager (the eager backend keeps the test fast and exact), same parameter names, and the config
    hash ignores it, so a run resumes with it on or off."""
    monkeypatch.setenv("SAIP_COMPILE_BACKEND", "eager")
    eager, eager_method = _fit(pretrain_root, tmp_path / "eager", steps=3)
    compiled, compiled_method = _fit(pretrain_root, tmp_path / "compiled", steps=3, compile=True)
    blocks = compiled_method.student.backbone.body.blocks
    assert all(block._compiled_call_impl is not None for block in blocks)
    assert eager_method.state_dict().keys() == compiled_method.state_dict().keys()
    eager_losses = [h["loss"] for h in eager.history]
    assert [h["loss"] for h in compiled.history] == pytest.approx(eager_losses, rel=1e-5)
    assert micro_train_config(compile=True) != micro_train_config()
    with_compile = Trainer(micro_saip(), micro_train_config(compile=True), pretrain_root, tmp_path / "a",
                           progress=False)
    without = Trainer(micro_saip(), micro_train_config(), pretrain_root, tmp_path / "b", progress=False)
    assert with_compile.config_hash() == without.config_hash()
