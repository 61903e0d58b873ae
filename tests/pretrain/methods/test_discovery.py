"""Discovery registers every baseline; ``saip-bench list methods`` shows the families each supports."""

from __future__ import annotations

import pytest

from saip_bench.discovery import import_submodules
from saip_bench.pretrain.base import METHODS

BASELINES = {
    "supervised": "convnet, hybrid, vit",
    "mae": "vit",
    "dino": "convnet, hybrid, vit",
    "hap": "vit",
    "solider": "convnet, hybrid, vit",
    "mocov3": "convnet, hybrid, vit",
    "random": "convnet, hybrid, vit",
}


def test_every_baseline_is_registered_with_honest_flags() -> None:
    import_submodules("saip_bench.pretrain.methods")
    assert set(BASELINES) <= set(METHODS.names())
    assert METHODS.get("hap").needs_keypoints and METHODS.get("supervised").needs_labels
    assert not any(METHODS.get(m).needs_backgrounds for m in BASELINES)


def test_list_methods_shows_the_families(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from saip_bench.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["list", "methods"]) == 0
    rows = {line.split("│")[1].strip(): line for line in capsys.readouterr().out.splitlines() if "│" in line}
    for method, families in BASELINES.items():
        assert families in rows[method], rows.get(method)
