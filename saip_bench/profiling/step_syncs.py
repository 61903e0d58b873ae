"""One training step of every fine-tune task and every pretraining method under ``SyncCounter``.

Why: the counts (host reads, data-dependent ops, small host-to-device copies per optimiser step) are the
CPU-measurable part of a GPU step's fixed cost; ``benchmarks/step_syncs.py`` prints them and
``tests/profiling/test_step_syncs.py`` holds each at its measured value, so a new per-step ``.item()``
fails a test instead of a GPU's MFU.

Fine-tune tasks run through ``Task.run`` on the tiny synthetic world (test-sized specs), with the fit
loop replaced: the task's own loss function gets two pre-built batches, the first warms up (optimiser
state), the second is counted through the step as ``common.fit_loop`` runs it (zero_grad, autocast
forward, backward, clip, optimiser step); then the unit stops. The batches are drawn before the counted
region (on a GPU the loader's workers build and pin them), so what a task's batch generator does in the
main process is not counted; the loop itself adds one read every ``log_every`` steps (the loss
history). Pretraining methods run ``Trainer._train_step`` (the real step, with its one packed read for
the guard) on the world's ``pretrain`` pool, again after one warm-up step.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from saip_bench.profiling.syncs import SyncCounter, SyncCounts

# test-sized units of each task (the sizes of tests/tasks/test_<task>.py), all on their finetune protocol
SMALL_CLIP = {"model": "ViT-B-16-quickgelu", "width": 32, "layers": 1, "heads": 2, "embed_dim": 32,
              "context_length": 16}


@dataclass(frozen=True)
class TaskUnit:
    """A test-sized fine-tune unit: task, dataset, input size, batch and protocol param overrides."""

    task: str
    dataset: str
    input_size: tuple[int, int]
    batch: int
    params: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    protocol: str = "finetune"


NARROW_CE2P = {"channels": 16, "context_channels": 16, "low_channels": 8, "edge_channels": 8}
TASK_UNITS: dict[str, TaskUnit] = {
    "reid": TaskUnit("reid", "market1501", (64, 32), 8),
    "t2i_retrieval": TaskUnit("t2i_retrieval", "cuhk_pedes", (64, 32), 8,
                              head={"embed_dim": 32, "mlm": {"depth": 1, "heads": 2}}),
    "attributes": TaskUnit("attributes", "pa100k", (64, 32), 8),
    "parsing": TaskUnit("parsing", "lip", (64, 48), 4, head=NARROW_CE2P),
    "multi_parsing": TaskUnit("multi_parsing", "cihp", (64, 80), 4, head=NARROW_CE2P),
    "pose": TaskUnit("pose", "coco", (64, 48), 8, params={"sigma": 1.0}, head={"deconv_channels": [16, 16]}),
    "wholebody": TaskUnit("wholebody", "coco_wholebody", (64, 48), 8, params={"sigma": 1.0},
                          head={"deconv_channels": [16, 16]}),
    "detection": TaskUnit("detection", "crowdhuman", (96, 128), 2, head={
        "channels": 16, "representation": 64, "rpn": {"pre_nms": [300, 200], "post_nms": [200, 100]},
        "rois_per_image": 64}),
    "fashion": TaskUnit("fashion", "fashionpedia", (96, 128), 2,
                        params={"keep_ratio": {"train_scale": 128, "test_scale": 128}},
                        head={"channels": 16, "detections_per_img": 10, "box_batch_per_image": 32,
                              "rpn_post_nms_train": 64, "rpn_pre_nms_test": 100, "rpn_post_nms_test": 50,
                              "attributes": {"dim": 16, "heads": 2}}),
}
SINGLE_PERSON = ("reid", "t2i_retrieval", "attributes")
METHODS = ("supervised_ids", "mae", "dino", "hap", "solider", "mocov3", "random", "saip")


@dataclass
class StepResult:
    """What one counted step did and computed: its counts, its loss and a digest of the weights after it
    (equal digests before and after a change: the change kept every number of the step)."""

    counts: SyncCounts
    loss: float
    digest: str


class _Captured(Exception):
    """Raised from the replaced fit loop once the step was counted (ends the unit early)."""

    def __init__(self, result: StepResult) -> None:
        super().__init__("step counted")
        self.result = result


def _deep_update(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _clip_checkpoint(folder: Path) -> Path:
    """A randomly initialised small CLIP text tower (nothing downloaded), as the retrieval tests use."""
    from saip_bench.tasks.text.clip import build_text_tower

    torch.manual_seed(3)
    tower = build_text_tower(SMALL_CLIP["model"], **{k: v for k, v in SMALL_CLIP.items() if k != "model"})
    path = folder / "small_text_tower.pt"
    torch.save(tower.state_dict(), path)
    return path


def unit_context(name: str, world: Path, out: Path) -> Any:
    """The test-sized ``UnitContext`` of ``TASK_UNITS[name]`` on the synthetic world at ``world``."""
    from saip_bench.backbones import create_backbone
    from saip_bench.data.readers import read_dataset
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks.base import UnitContext

    unit = TASK_UNITS[name]
    spec = get_task_spec(unit.task, unit.dataset).model_copy(deep=True)
    protocol = spec.protocols[unit.protocol]
    protocol.schedule.max_steps = 2
    protocol.schedule.batch_size = unit.batch
    protocol.params["input_size"] = list(unit.input_size)
    _deep_update(protocol.params, copy.deepcopy(unit.params))
    head = protocol.params.setdefault("head", {})
    extra = copy.deepcopy(unit.head)
    if name in ("parsing", "multi_parsing") and head.get("type") != "ce2p":
        extra = {"channels": extra["channels"]}
    _deep_update(head, extra)
    if name == "t2i_retrieval":
        head["text_encoder"] = {**head.get("text_encoder", {}), **SMALL_CLIP,
                                "checkpoint": str(_clip_checkpoint(out))}
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", img_size=unit.input_size)
    data = read_dataset(unit.dataset, world / unit.dataset, spec.dataset_version)
    return UnitContext(spec=spec, protocol=unit.protocol, backbone=backbone, data=data, out_dir=out / name,
                       cache_dir=out / "cache", show_progress=False, amp=False, bootstrap_resamples=0)


def _two_batches(batches: Callable[[int], Any]) -> list[Any]:
    """The first two batches the fit would see (over epochs when an epoch has one)."""
    found: list[Any] = []
    for epoch in itertools.count():
        for batch in batches(epoch):
            found.append(batch)
            if len(found) == 2:
                return found
        if epoch > 4:
            raise RuntimeError("the unit gives fewer than two batches")
    return found


def _fit_steps(counter: SyncCounter) -> Callable[..., Any]:
    """A stand-in for ``common.fit_loop``: warm-up step, counted step, then ``_Captured``."""
    from saip_bench.tasks.common import weights_digest
    from saip_bench.utils import autocast

    def fit_loop(parameters_model: nn.Module, batches: Callable[[int], Any], loss_fn: Callable[[Any], Any],
                 schedule: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int, amp: bool = True,
                 device: torch.device | str = "cpu", *args: Any, **kwargs: Any) -> dict[str, Any]:
        first, second = _two_batches(batches)
        counter.mark_device(parameters_model)

        def step(batch: Any) -> torch.Tensor:  # as fit_loop's body runs it (one micro-batch, one rank)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, enabled=amp):
                loss = loss_fn(batch)
            loss.backward()
            if schedule.grad_clip:
                torch.nn.utils.clip_grad_norm_(parameters_model.parameters(), schedule.grad_clip)
            optimizer.step()
            return loss.detach()

        step(first)
        counter.mark_device(optimizer)
        with counter.counting() as counts:
            loss = step(second)
        raise _Captured(StepResult(counts, float(loss), weights_digest(parameters_model)))

    return fit_loop


@contextlib.contextmanager
def _replaced_fit_loops(replacement: Callable[..., Any]) -> Iterator[None]:
    """Every module of the tasks that holds ``common.fit_loop`` gets ``replacement`` for the block."""
    from saip_bench.tasks import base, common

    base.TASKS.names()  # registered tasks imported
    original = common.fit_loop
    with contextlib.ExitStack() as stack:
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("saip_bench.tasks") and \
                    getattr(module, "fit_loop", None) is original:
                stack.enter_context(mock.patch.object(module, "fit_loop", replacement))
        yield


def task_step(name: str, world: Path, out: Path | None = None) -> StepResult:
    """One fine-tune step of ``TASK_UNITS[name]`` on the synthetic world at ``world``."""
    from saip_bench.discovery import import_submodules
    from saip_bench.tasks.base import get_task

    import_submodules("saip_bench.tasks")
    with contextlib.ExitStack() as stack:
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="step-syncs-")))
        ctx = unit_context(name, world, out)
        counter = SyncCounter()
        with _replaced_fit_loops(_fit_steps(counter)), counter.tracking():
            try:
                get_task(TASK_UNITS[name].task).run(ctx)
            except _Captured as captured:
                return captured.result
    raise RuntimeError(f"{name}: the fit loop was never reached")


def method_trainer(
    name: str, pool: Path, out: Path, batch: int = 4, blocks: int | None = None,
    train_overrides: dict[str, Any] | None = None, method_overrides: dict[str, Any] | None = None,
) -> Any:
    """A started ``Trainer`` of pretraining method ``name`` (``quick`` preset, fp32, ViT-Tiny cut to its
    first ``blocks`` blocks when given, micro-batch ``batch``, 4 steps, seed 0) on the pretraining folder
    ``pool``, writing to ``out``: the step the counting and compile tests run."""
    from saip_bench.backbones import create_backbone
    from saip_bench.discovery import import_submodules
    from saip_bench.pretrain.base import METHODS
    from saip_bench.pretrain.trainer import Trainer, load_preset
    from saip_bench.utils import seed_everything

    import_submodules("saip_bench.pretrain.methods")
    train, config = load_preset(name, "quick", {"batch_size": batch, "amp": False, "num_workers": 0,
                                                "steps": 4, **(train_overrides or {})})
    if name == "supervised_ids":
        config = {**config, "num_classes": 1000}
    config = {**config, **(method_overrides or {})}
    seed_everything(0)
    backbone = create_backbone("vit_tiny", img_size=tuple(train.img_size))
    if blocks is not None:
        backbone.body.blocks = backbone.body.blocks[:blocks]
    method = METHODS.get(name)(backbone, config)
    trainer = Trainer(method, train, pool, out, seed=0, progress=False, loggers=["jsonl"])
    trainer._start()
    return trainer


def method_step(name: str, pool: Path, out: Path | None = None, batch: int = 4) -> StepResult:
    """One ``Trainer._train_step`` of pretraining method ``name`` (``method_trainer``) on the pretraining
    folder ``pool``."""
    with contextlib.ExitStack() as stack:
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="step-syncs-")))
        trainer = method_trainer(name, pool, out / name, batch)
        method = trainer.method
        method.train()
        loader = trainer._batches()
        counter = SyncCounter()
        with counter.tracking():
            first, second = next(loader), next(loader)  # built before the region (pinned on a GPU)
            counter.mark_device(method)
            trainer._train_step(iter([first]))
            counter.mark_device(trainer.optimizer)
            with counter.counting() as counts:
                logs, _ = trainer._train_step(iter([second]))
        from saip_bench.tasks.common import weights_digest

        return StepResult(counts, float(logs["loss"]), weights_digest(method))
