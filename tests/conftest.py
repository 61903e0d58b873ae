"""Shared fixtures. Data is generated (synthetic world) or read from ../shared/realdata; never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import saip_bench  # noqa: F401  (installs the torchvision CPU shim before any test imports timm)

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config: pytest.Config) -> None:
    """Tests never read or fill the user's cache (``saip_bench.cachedir``): a command a test runs without
    ``--cache-dir`` gets a throwaway one, as do its subprocesses (they inherit the variable)."""
    import tempfile

    os.environ["SAIP_CACHE_DIR"] = config._saip_cache = tempfile.mkdtemp(prefix="saip-test-cache-")  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if getattr(config, "_saip_cache", None):
        shutil.rmtree(config._saip_cache, ignore_errors=True)  # type: ignore[attr-defined]


def realdata_root() -> Path:
    return Path(os.environ.get("SAIP_REALDATA", REPO.parent / "shared" / "realdata"))


def require_realdata() -> Path:
    """The real samples' folder; without it a test is skipped with the reason, except in CI (``CI=true``),
    where missing samples fail the run: a fresh clone passes its own test command, CI still checks them."""
    root = realdata_root()
    if root.exists():
        return root
    message = (f"real sample data not found at {root}: set SAIP_REALDATA to the project's shared/realdata "
               "folder (README, 'Tests')")
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def realdata() -> Path:
    return require_realdata()


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic world (all 12 datasets), generated once per test session."""
    from saip_bench.data.synth import generate_world

    out = tmp_path_factory.mktemp("synth_world")
    generate_world(out, preset="tiny", seed=0, contact_sheets=False)
    return out
