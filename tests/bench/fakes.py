"""Fakes for runner tests: specs, a task, a pretrainer, a world and a reader that need nothing else."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from saip_bench.backbones.base import Backbone, StageInfo
from saip_bench.data.records import DatasetSplits
from saip_bench.specs import TaskSpec
from saip_bench.tasks.base import Task, UnitContext, UnitResult
from saip_bench.utils import atomic_write_text


def make_spec(task: str, dataset: str, main: str = "score", direction: str = "max") -> TaskSpec:
    schedule = {"epochs": 1, "batch_size": 8, "lr": 0.1}
    return TaskSpec.model_validate({
        "task": task, "dataset": dataset, "splits": {"train": "train", "eval": "test"},
        "input_size": (32, 16),
        "head": {"type": "linear"}, "metric": {"main": main, "direction": direction},
        "protocols": {"finetune": {"kind": "finetune", "schedule": schedule},
                      "linear": {"kind": "linear", "schedule": schedule}},
        "default_protocol": "finetune",
    })


FAKE_SPECS = {
    spec.key: spec for spec in (
        make_spec("reid", "market1501", "rank1"),
        make_spec("attributes", "pa100k", "mA"),
        make_spec("detection", "crowdhuman", "mr", "min"),
    )
}


class TinyBody(nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.feature_info = [{"num_chs": 4, "reduction": 4}]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_head(self, fmap: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))  # timm's interface for the pooled feature


def tiny_backbone(seed: int) -> Backbone:
    torch.manual_seed(seed)
    return Backbone("tiny", TinyBody(), "convnet", "tiny", {}, (32, 16), [StageInfo(4, 4)])


class FakePretrainer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, *, method, backbone, preset, data_dir, out_dir, seed, steps) -> Path:
        """As the real trainer under torchrun: every rank takes part, rank 0 alone writes the export (both
        ranks writing one file at once made the other's hash read a half-written file: a CI hang)."""
        self.calls.append((method, backbone, seed))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "backbone.pt"
        group = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not group or torch.distributed.get_rank() == 0:
            offset = sum(map(ord, method))
            torch.save(tiny_backbone(seed + offset).body.state_dict(), path)
        if group:
            torch.distributed.barrier()
        return path


def fake_loader(path: Path, img_size=None) -> Backbone:
    backbone = tiny_backbone(0)
    backbone.body.load_state_dict(torch.load(path))
    return backbone


class FakeTask(Task):
    """Scores are a deterministic function of the weights, dataset and seed; can be told to fail."""

    name = "fake"
    datasets = ()
    calls: ClassVar[list[str]] = []
    fail_on: ClassVar[set[str]] = set()

    def build_head(self, backbone, spec, data):
        return nn.Identity()

    def fit(self, ctx, head):
        return {}

    def predict(self, ctx, head):
        return []

    def score(self, ctx, predictions):
        return {}

    def run(self, ctx: UnitContext) -> UnitResult:
        FakeTask.calls.append(ctx.spec.dataset)
        if ctx.spec.dataset in FakeTask.fail_on:
            raise RuntimeError("boom")
        weight = float(ctx.backbone.body.conv.weight.detach().sum())
        digest = hashlib.sha256(f"{weight:.6f}{ctx.spec.dataset}{ctx.seed}".encode()).digest()
        value = 50 + digest[0] / 10
        main = ctx.spec.metric.main
        n = ctx.max_eval_samples or 10
        return UnitResult(scores={main: value, "other": value / 2}, main_metric=main, main_score=value,
                          predictions=[], n_samples={"test": {"original": 10, "effective": min(n, 10)}})


def fake_world(out: Path, preset: str, seed: int) -> Path:
    """Safe when two processes build it at once, as the real generator is (the race tests do that):
    ``exist_ok`` and atomic files, so neither sees a half-made world nor trips over the other's folder."""
    for name in [*(s.dataset for s in FAKE_SPECS.values()), "pretrain"]:
        if (out / name / "ann.json").exists():
            continue  # cached, like the real world (keyed by content)
        (out / name).mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / name / "ann.json", f'{{"name": "{name}", "seed": {seed}}}')
    return out


def fake_read(name: str, root: Path, version: str | None) -> DatasetSplits:
    return DatasetSplits(name=name, version=version or "1", root=root, splits={"test": [{"path": "x"}] * 10})
