"""Shared fixtures. Data is generated (synthetic world) or read from ../shared/realdata; never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import saip_bench  # noqa: F401  (installs the torchvision CPU shim before any test imports timm)

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def realdata_root() -> Path:
    return Path(os.environ.get("SAIP_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    root = realdata_root()
    if not root.exists():
        pytest.fail(f"real sample data not found at {root} (set SAIP_REALDATA)")
    return root


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic world (all 12 datasets), generated once per test session."""
    from saip_bench.data.synth import generate_world

    out = tmp_path_factory.mktemp("synth_world")
    generate_world(out, preset="tiny", seed=0, contact_sheets=False)
    return out
