"""The SGDR schedule (SCHP's): warm-up from lr/500, cosine to the floor, then restarts at lr/2."""

from __future__ import annotations

import math

import pytest

from saip_bench.errors import SpecError
from saip_bench.specs import Schedule, _validate
from saip_bench.tasks import common

SGDR = Schedule(epochs=15, batch_size=4, lr=1.0, warmup_epochs=3, warmup_start=0.002, min_lr=0.002,
                scheduler="sgdr", cycle_start_epochs=12, cycle_epochs=1, cycle_lr=0.5)


def factor(step: int) -> float:
    return common.lr_factor(step, 150, common.warmup_steps(SGDR, 10), SGDR, steps_per_epoch=10)


def test_sgdr_warms_up_decays_and_restarts_every_cycle():
    floor = 0.002
    assert factor(0) == pytest.approx(0.002)  # warm-up from lr/500
    assert factor(15) == pytest.approx(0.002 + 0.998 * 0.5)
    assert factor(30) == pytest.approx(1.0)  # cosine from the end of the warm-up ...
    assert factor(75) == pytest.approx(floor + (1 - floor) * 0.5)
    assert factor(119) == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    for start in (120, 130, 140):  # ... to the floor at epoch 12, then a restart at lr/2 every epoch
        assert factor(start) == pytest.approx(0.5)
        assert factor(start + 5) == pytest.approx(floor + (0.5 - floor) * 0.5)
        assert factor(start + 9) < factor(start + 5) < factor(start)


def test_sgdr_without_its_cycle_lengths_is_a_spec_error():
    with pytest.raises(SpecError, match="cycle_start_epochs and cycle_epochs"):
        _validate(Schedule, {"epochs": 10, "batch_size": 2, "lr": 0.1, "scheduler": "sgdr"}, "lip.yaml")
