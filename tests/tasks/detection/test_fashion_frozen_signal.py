"""The spec's Fashionpedia ``frozen`` protocol, as declared, trains a detector that scores above the untrained
one (issue 23: "a short frozen run ... still trains"; issue 26: no board column where every method scores 0).

Why a test of the spec's numbers: the frozen run's step count, input size and RoI budgets decide whether the
default board's Fashionpedia column carries any signal; a protocol edit that leaves the model untrained (as
20 steps at 160x224 did: AP^(IoU+F1) exactly 0 for every method) fails here on the tiny world.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.data.readers import read_dataset
from saip_bench.specs import get_task_spec
from saip_bench.tasks.base import UnitContext, get_task
from saip_bench.utils import torch_threads


@pytest.fixture(scope="module")
def fashion_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the tiny world's Fashionpedia files (the other datasets are not needed here)."""
    from saip_bench.data.synth import generate_world

    out = tmp_path_factory.mktemp("fashion_world")
    generate_world(out, preset="tiny", seed=0, datasets=["fashionpedia"], contact_sheets=False)
    return out / "fashionpedia"


def frozen_scores(root: Path, out: Path, steps: int | None) -> dict[str, float]:
    """Scores of the spec's frozen unit on a random-init ViT-T (``steps``: override of max_steps)."""
    spec = get_task_spec("fashion", "fashionpedia").model_copy(deep=True)
    if steps is not None:
        spec.protocols["frozen"].schedule.max_steps = steps
    size = tuple(spec.protocols["frozen"].params["input_size"])
    torch.manual_seed(0)
    ctx = UnitContext(spec=spec, protocol="frozen", backbone=create_backbone("vit_tiny", size),
                      data=read_dataset("fashionpedia", root), out_dir=out, cache_dir=out.parent / "cache",
                      show_progress=False, bootstrap_resamples=0)
    return get_task("fashion").run(ctx).scores


def test_the_frozen_protocol_beats_the_untrained_model(fashion_world, tmp_path):
    # one thread, as each shard of a bench run: the 200 small steps cost ~0.1 CPU-s each then, while two
    # threads on a busy 2-core machine spend most of a step waiting on each other
    with torch_threads(1):
        untrained = frozen_scores(fashion_world, tmp_path / "untrained", steps=1)
        trained = frozen_scores(fashion_world, tmp_path / "trained", steps=None)
    assert trained["segm/AP"] > untrained["segm/AP"]
    assert trained["bbox/coco/AP"] > untrained["bbox/coco/AP"]
