"""Device placement and the device guard, checked on CPU: a ``meta`` module fed a CPU tensor stands in for a
CUDA module fed a CPU batch (the crash an H200 run hit inside torchvision's box_iou)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from saip_bench.data.records import DatasetSplits
from saip_bench.devices import (
    DeviceMismatchError,
    _same_place,
    check_inputs,
    device_guard,
    module_device,
    place_models,
    to_device,
)
from saip_bench.specs import get_task_spec
from saip_bench.tasks import crowdhuman, fashionpedia
from saip_bench.tasks.base import Task, UnitContext
from saip_bench.tasks.detection.fashion_rcnn import FashionHeadParams

META = torch.device("meta")


def tiny_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def hook_counts(*roots: nn.Module) -> dict[str, int]:
    return {f"{i}.{name}": len(module._forward_pre_hooks)
            for i, root in enumerate(roots) for name, module in root.named_modules()}


# --------------------------------------------------------------------------------------- device_guard
def test_guard_names_the_submodule_and_both_devices():
    net = tiny_net().to(META)
    with device_guard(backbone=net), pytest.raises(DeviceMismatchError) as info:
        net(torch.randn(3, 4))
    message = str(info.value)
    assert "backbone.0" in message and "Linear" in message
    assert "meta" in message and "cpu" in message and "(3, 4)" in message


def test_guard_checks_keyword_and_nested_inputs():
    class TakesLists(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, maps: list[torch.Tensor], targets: dict[str, Any]) -> torch.Tensor:
            return maps[0] * self.weight

    module = TakesLists().to(META)
    good = [torch.empty(2, device=META)]
    with device_guard(head=module), pytest.raises(DeviceMismatchError, match="head"):
        module(good, targets={"boxes": [torch.zeros(1, 4)], "n": 3})  # the CPU tensor hides in a kwarg
    with device_guard(head=module):
        module(good, targets={"boxes": [torch.zeros(1, 4, device=META)], "n": 3})


def test_guard_lets_matching_inputs_through_and_unhooks_after_the_first_call():
    net = tiny_net()
    with device_guard(backbone=net):
        armed = hook_counts(net)
        assert armed == {"0.": 0, "0.0": 1, "0.1": 0, "0.2": 1}  # only modules holding parameters
        out = net(torch.randn(3, 4))
        assert out.shape == (3, 2)
        assert sum(hook_counts(net).values()) == 0  # checked once: out of the hot path
        net(torch.randn(3, 4))
    assert sum(hook_counts(net).values()) == 0


def test_guard_leaves_no_hook_behind():
    net = tiny_net()
    with device_guard(backbone=net):
        pass  # never called: every hook still armed until the block ends
    assert sum(hook_counts(net).values()) == 0
    meta = tiny_net().to(META)
    with pytest.raises(DeviceMismatchError), device_guard(backbone=meta):
        meta(torch.randn(1, 4))
    assert sum(hook_counts(meta).values()) == 0  # removed on the way out of a failure too


def test_a_module_shared_by_two_roots_is_hooked_once():
    shared = nn.Linear(4, 4)
    backbone = nn.Sequential(shared)
    head = nn.Sequential(shared, nn.Linear(4, 2))
    with device_guard(backbone=backbone, head=head):
        assert len(shared._forward_pre_hooks) == 1
        assert len(head[1]._forward_pre_hooks) == 1
        head(torch.randn(2, 4))
        assert sum(hook_counts(backbone, head).values()) == 0
    shared.to(META)
    with device_guard(backbone=backbone, head=head), pytest.raises(DeviceMismatchError) as info:
        head(torch.randn(2, 4))
    assert "backbone.0" in str(info.value)  # labelled by the first root that reaches it


def test_check_inputs_and_cuda_indices():
    check_inputs("probe", nn.Linear(2, 2), ([torch.zeros(1, 2)], {"x": torch.zeros(1)}))
    with pytest.raises(DeviceMismatchError, match="probe"):
        check_inputs("probe", nn.Linear(2, 2).to(META), (torch.zeros(1, 2),))
    # torch.device("cuda") (no index) is the current device, cuda:0 here; other indices differ
    assert _same_place(torch.device("cuda"), torch.device("cuda:0"))
    assert not _same_place(torch.device("cuda:0"), torch.device("cuda:1"))
    assert not _same_place(torch.device("cpu"), META)


# ------------------------------------------------------------------------------- Task.run arms the guard
class ProbeTask(Task):
    """A task whose fit/predict feed the backbone and head from the given devices."""

    name = "probe"
    datasets = ()

    def __init__(self, fit_feeds: dict[str, str], predict_feeds: dict[str, str]) -> None:
        self.fit_feeds = fit_feeds
        self.predict_feeds = predict_feeds
        self.seen: dict[str, Any] = {}

    def build_head(self, backbone: Any, spec: Any, data: Any) -> nn.Module:
        self.seen["backbone_at_build"] = module_device(backbone)
        return nn.Linear(4, 2)

    @staticmethod
    def feed(ctx: UnitContext, head: nn.Module, feeds: dict[str, str]) -> None:
        for which, device in feeds.items():
            module = ctx.backbone if which == "backbone" else head
            module(torch.randn(2, 4, device=device))

    def fit(self, ctx: UnitContext, head: nn.Module) -> dict[str, Any]:
        self.seen["fit"] = (module_device(ctx.backbone), module_device(head))
        self.feed(ctx, head, self.fit_feeds)
        return {"n_samples": {"train": {"original": 2, "effective": 2}}, "steps": 1}

    def predict(self, ctx: UnitContext, head: nn.Module) -> list[Path]:
        self.feed(ctx, head, self.predict_feeds)
        return []

    def score(self, ctx: UnitContext, predictions: list[Path]) -> dict[str, float]:
        return {ctx.spec.metric.main: 1.0}


def probe_ctx(tmp_path: Path, device: str) -> UnitContext:
    data = DatasetSplits(name="probe", version="v0", root=tmp_path, splits={})
    return UnitContext(spec=get_task_spec("attributes", "peta"), protocol="linear",
                       backbone=nn.Sequential(nn.Linear(4, 4)),  # type: ignore[arg-type]
                       data=data, out_dir=tmp_path / "out", device=torch.device(device), amp=False,
                       show_progress=False)


def test_task_run_places_models_and_guards_fit(tmp_path):
    task = ProbeTask({"backbone": "cpu"}, {})
    with pytest.raises(DeviceMismatchError, match=r"backbone\.0 .*meta.*cpu"):
        task.run(probe_ctx(tmp_path, "meta"))
    assert task.seen["backbone_at_build"] == META and task.seen["fit"] == (META, META)


def test_task_run_guards_the_head_in_fit(tmp_path):
    task = ProbeTask({"backbone": "meta", "head": "cpu"}, {})
    with pytest.raises(DeviceMismatchError, match=r"head \(Linear\)"):
        task.run(probe_ctx(tmp_path, "meta"))


def test_task_run_rearms_the_guard_for_predict(tmp_path):
    # fit's calls on the right device use up the one-shot hooks; predict must get fresh ones
    task = ProbeTask({"backbone": "meta", "head": "meta"}, {"backbone": "cpu"})
    with pytest.raises(DeviceMismatchError, match="backbone"):
        task.run(probe_ctx(tmp_path, "meta"))


def test_task_run_on_matching_devices_leaves_no_hook(tmp_path):
    task = ProbeTask({"backbone": "cpu", "head": "cpu"}, {"backbone": "cpu", "head": "cpu"})
    ctx = probe_ctx(tmp_path, "cpu")
    result = task.run(ctx)
    assert result.main_metric == "mA" and result.main_score == 1.0 and result.extra["steps"] == 1
    assert sum(hook_counts(ctx.backbone).values()) == 0


# ------------------------------------------------------------------------------------ to_device & co
def test_to_device_moves_nested_tensors_and_keeps_the_rest():
    value = {"maps": [torch.zeros(2), (torch.ones(1), "label", 3)], "meta": {"id": None, "t": torch.ones(2)}}
    moved = to_device(value, "meta")
    assert moved["maps"][0].device == META and moved["meta"]["t"].device == META
    assert isinstance(moved["maps"][1], tuple) and moved["maps"][1][0].device == META
    assert moved["maps"][1][1:] == ("label", 3) and moved["meta"]["id"] is None
    assert value["maps"][0].device.type == "cpu"  # the input is not modified
    plain = torch.zeros(1)
    assert to_device(plain, "cpu") is plain and to_device(7, META) == 7


def test_module_device():
    assert module_device(nn.Linear(2, 2).to(META)) == META
    buffers_only = nn.BatchNorm1d(3, affine=False).to(META)
    assert next(buffers_only.parameters(), None) is None and module_device(buffers_only) == META
    assert module_device(nn.ReLU()) == torch.device("cpu")
    assert module_device(nn.Sequential(nn.ReLU(), nn.Linear(2, 2).to(META))) == META


def test_place_models_moves_every_module():
    a, b = nn.Linear(2, 2), nn.BatchNorm1d(2)
    place_models("meta", a, b)
    assert {p.device for m in (a, b) for p in [*m.parameters(), *m.buffers()]} == {META}


# ---------------------------------------------------------------------- detection heads move their targets
class SeenList(list):
    """A list that notes when the loss reads it: the head must use what ``to_device`` returned."""

    read = False

    def __iter__(self):
        SeenList.read = True
        return super().__iter__()

    def __getitem__(self, index):
        SeenList.read = True
        return super().__getitem__(index)


def spy_on(monkeypatch, module: Any) -> list[tuple[Any, Any]]:
    calls: list[tuple[Any, Any]] = []

    def spy(value: Any, device: Any) -> Any:
        calls.append((device, value))
        return SeenList(value)

    SeenList.read = False
    monkeypatch.setattr(module, "to_device", spy)
    return calls


def test_crowdhuman_head_moves_targets_to_the_maps_device(monkeypatch):
    calls = spy_on(monkeypatch, crowdhuman)
    torch.manual_seed(0)
    detector = crowdhuman.CrowdDetector([16], True, [0], (64, 64), channels=8)
    maps = [torch.randn(1, 16, 4, 4)]
    targets = [{"boxes": torch.tensor([[4.0, 4, 20, 40]]), "labels": torch.tensor([1]),
                "ignore": torch.zeros(0, 4)}]
    loss = detector.losses(maps, targets)
    assert torch.isfinite(loss)
    assert len(calls) == 1 and calls[0][0] == maps[0].device and calls[0][1] is targets
    assert SeenList.read  # the loss read the moved targets, not the caller's


def test_fashionpedia_head_moves_targets_to_the_maps_device(monkeypatch):
    calls = spy_on(monkeypatch, fashionpedia)
    torch.manual_seed(0)
    params = FashionHeadParams(channels=8, detections_per_img=5, rpn_post_nms_train=50,
                               box_batch_per_image=16)
    model = fashionpedia.FashionModel([16], True, [0], (64, 64), num_categories=46, num_attributes=7,
                                      params=params)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 10:30] = 1
    targets = [{"boxes": torch.tensor([[10.0, 10, 30, 40]]), "labels": torch.tensor([1]), "masks": masks,
                "attributes": torch.tensor([[0.0, 1, 0, 0, 0, 0, 1]])}]
    model.train()
    maps = [torch.randn(1, 16, 4, 4)]
    loss = model.losses(maps, targets)
    assert torch.isfinite(loss)
    assert len(calls) == 1 and calls[0][0] == maps[0].device and calls[0][1] is targets
    assert SeenList.read
