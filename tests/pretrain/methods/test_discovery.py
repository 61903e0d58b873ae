"""Discovery registers every baseline; ``saip-bench list methods`` shows the families each supports."""

from __future__ import annotations

import pytest

from saip_bench.discovery import import_submodules
from saip_bench.pretrain.base import METHODS

BASELINES = {
    "supervised_ids": "convnet, hybrid, vit",
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
    assert METHODS.get("hap").needs_keypoints and METHODS.get("supervised_ids").needs_labels
    assert not any(METHODS.get(m).needs_backgrounds for m in BASELINES)


def test_list_methods_shows_the_families(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from saip_bench.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["list", "methods"]) == 0
    rows = {line.split("│")[1].strip(): line for line in capsys.readouterr().out.splitlines() if "│" in line}
    for method, families in BASELINES.items():
        assert families in rows[method], rows.get(method)


@pytest.mark.parametrize("name", ["supervised_ids", "mae", "dino", "hap", "solider", "mocov3", "random"])
def test_unknown_config_key_is_refused_by_name(name: str) -> None:
    """A typo in a preset or override (``mask_raito``) is a SpecError naming the key, not a silent default."""
    from saip_bench.errors import SpecError
    from tests.pretrain.methods.conftest import build_method

    extra = {"num_classes": 4} if name == "supervised_ids" else {}  # filled from the data folder in a run
    build_method(name, **extra)  # every quick preset uses only known keys
    with pytest.raises(SpecError, match=f"method '{name}': unknown config key.*mask_raito"):
        build_method(name, mask_raito=0.5, **extra)


@pytest.mark.parametrize("name", ["supervised_ids", "mae", "dino", "hap", "solider", "mocov3", "random"])
def test_every_preset_uses_only_known_config_keys(name: str) -> None:
    import yaml

    from saip_bench.pretrain.trainer import PRESET_DIR

    import_submodules("saip_bench.pretrain.methods")
    presets = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    for preset, entry in presets.items():
        keys = set((entry or {}).get("method") or {})
        assert keys <= METHODS.get(name).config_keys, (preset, keys - METHODS.get(name).config_keys)
