"""Issue 26, item 4: the pose column of the default board must measure something. Before the fix, the
frozen (fast) protocol's head stayed near its zero init and every method scored AP 0; this checks that
the spec's fast protocol, fitted briefly on the tiny world, gets AP > 0 on its own training images
(docs/board_signal.md)."""

from __future__ import annotations

import pytest

from saip_bench.data.readers import read_dataset
from tests.tasks.dense.signal import fast_protocol_spec, fit_on_training_images


@pytest.fixture(scope="module")
def coco(synth_world):
    return read_dataset("coco", synth_world / "coco")


def test_fast_protocol_fits_its_own_training_images(coco, tmp_path):
    spec = fast_protocol_spec("pose", "coco")
    assert spec.protocols[spec.default_protocol].params["sigma"] >= 2.0  # sigma 1 at 32x24 learned nothing
    result = fit_on_training_images("pose", spec, coco, tmp_path)
    assert result.scores["AP50"] > 0.0 and result.main_score > 0.0
