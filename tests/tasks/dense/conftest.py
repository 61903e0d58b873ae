"""Fixtures of the dense-task tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.tasks.dense.pose_cases import read_worlds


@pytest.fixture(scope="module")
def worlds(synth_world: Path) -> dict[str, Any]:
    """The pose and whole-body datasets of the synthetic world (``pose_cases.CASES``), read once a module."""
    return read_worlds(synth_world)
