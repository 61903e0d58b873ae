"""Fixtures for reader tests: paths of the real samples (``realdata``) and hand-built roots."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def coco_sample(realdata: Path) -> Path:
    return realdata / "coco_keypoints" / "tests" / "data" / "coco"


@pytest.fixture(scope="session")
def peta_mat(realdata: Path) -> Path:
    return realdata / "peta" / "data" / "PETA" / "PETA.mat"


@pytest.fixture(scope="session")
def cihp_sample(realdata: Path) -> Path:
    return realdata / "cihp" / "datasets" / "CIHP"


@pytest.fixture(scope="session")
def fashion_sample(realdata: Path) -> Path:
    return realdata / "fashionpedia"
