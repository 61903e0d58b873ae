"""2-process gloo DDP on CPU gives the same losses and weights as 1 process at the same global batch."""

import json
import os
from pathlib import Path

import pytest
import torch

from saip_bench.pretrain.trainer import Trainer, init_distributed
from tests.ranks import free_port, leave_group, run_ranks

from ._micro import micro_saip, micro_train_config


def _run(
    rank: int, world: int, port: int, root: str, out: str, batch: int, compile: bool | str = False
) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    info, device = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    method = micro_saip()
    config = micro_train_config(steps=2, batch_size=batch, checkpoint_every=100, compile=compile)
    trainer = Trainer(method, config, root, out, seed=3, device=device, progress=False, dist_info=info)
    result = trainer.fit()
    if info.is_main:
        weights = {k: v.tolist() for k, v in method.student.state_dict().items() if "blocks.0.attn" in k}
        Path(out, "result.json").write_text(json.dumps({"history": result.history, "weights": weights}))
    if world > 1:
        leave_group()


@pytest.mark.parametrize("compile", [False, "step"])
def test_two_process_gloo_matches_single_process(pretrain_root, tmp_path, monkeypatch, compile):
    """``compile``: ``step`` compiles each rank's whole step (eager backend, inherited by the ranks) under
    DDP, against one eager process: what a ``torchrun ... --compile step`` pretraining runs. Dynamo splits
    that step at DDP's gradient buckets (DDP's 1 MB first bucket already cuts the micro model's 1.3 MB of
    gradients) and replays the pieces on fake tensors, which the position-embedding resample once failed
    (vit.resample_weights)."""
    monkeypatch.setenv("SAIP_COMPILE_BACKEND", "eager")
    port = free_port()
    run_ranks(_run, args=(2, port, str(pretrain_root), str(tmp_path / "ddp"), 2, compile))
    os.environ.pop("WORLD_SIZE", None)
    _run(0, 1, port, str(pretrain_root), str(tmp_path / "single"), 4)
    ddp = json.loads((tmp_path / "ddp/result.json").read_text())
    single = json.loads((tmp_path / "single/result.json").read_text())
    for a, b in zip(ddp["history"], single["history"], strict=True):
        for key in ("loss", "loss/csm_rep", "loss/csm_attn", "loss/csr", "loss/css_inst", "loss/css_roi"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), (key, a[key], b[key])
    for key, value in single["weights"].items():
        torch.testing.assert_close(
            torch.tensor(ddp["weights"][key]), torch.tensor(value), atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("name", ["saip", "mae", "dino", "hap", "solider", "mocov3", "supervised_ids"])
def test_every_gradient_has_its_parameters_layout(name, synth_world, tmp_path):
    """DDP copies each gradient into a bucket view laid out like its parameter. A gradient with other
    strides still works, but the reducer warns "Grad strides do not match bucket view strides" on every
    rank of every run. Under bf16 autocast (a GPU's default, and the only case found: fp32 had none),
    SAIP's 1x1 search-head convolution, fed the expert's channels-last feature map, had a channels-last
    gradient (autograd keeps a gradient whose strides differ only on size-1 dimensions as it is; DDP
    compares all of them)."""
    from saip_bench.profiling.step_syncs import method_trainer

    overrides = {"tap_block": 1} if name == "saip" else {}
    trainer = method_trainer(name, synth_world / "pretrain", tmp_path, batch=2, blocks=3,
                             train_overrides={"amp": True}, method_overrides=overrides)
    trainer._train_step(trainer._batches())
    mismatched = {key: (p.grad.stride(), p.stride()) for key, p in trainer.method.named_parameters()
                  if p.grad is not None and p.grad.stride() != p.stride()}
    assert not mismatched, mismatched
