"""Issue 26, item 4: the pose column of the default board must measure something. Before the fix, the
frozen (fast) protocol's head stayed near its zero init and every method scored AP 0; this checks that
the spec's fast protocol, fitted briefly on the tiny world, gets AP > 0 on its own training images
(docs/board_signal.md)."""

from __future__ import annotations

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task


@pytest.fixture(scope="module")
def coco(synth_world):
    return read_dataset("coco", synth_world / "coco")


def test_fast_protocol_fits_its_own_training_images(coco, tmp_path):
    spec = get_task_spec("pose", "coco").model_copy(deep=True)
    protocol = spec.default_protocol
    assert spec.protocols[protocol].params["sigma"] >= 2.0  # sigma 1 at 32x24 heatmaps learned nothing
    spec.splits = {"train": "train", "eval": "train"}  # score the images the head was fitted on
    torch.manual_seed(0)
    size = tuple(spec.protocols[protocol].params["input_size"])
    ctx = UnitContext(spec=spec, protocol=protocol, backbone=create_backbone("vit_tiny", size), data=coco,
                      out_dir=tmp_path, cache_dir=tmp_path / "cache", show_progress=False, amp=False,
                      bootstrap_resamples=0)
    result = get_task("pose").run(ctx)
    assert result.scores["AP50"] > 0.0 and result.main_score > 0.0
