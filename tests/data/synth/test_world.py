"""generate_world: every dataset written, byte-deterministic per seed, cached by content key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saip_bench.data.synth import DATASETS, EXPORTERS, code_version, generate_world
from saip_bench.data.synth.presets import PRESETS, get_preset
from saip_bench.errors import UserError
from tests.ranks import race

SMALL = ["icfg_pedes", "pa100k", "peta", "coco_wholebody", "crowdhuman", "lip"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_world_has_every_dataset_and_a_cache_key(synth_world: Path) -> None:
    assert len(DATASETS) == 12
    for name in [*DATASETS, "pretrain"]:
        assert (synth_world / name).is_dir(), name
        assert any((synth_world / name).rglob("*.*")), name
    state = json.loads((synth_world / ".world.json").read_text())
    assert state["preset"] == "tiny" and state["seed"] == 0 and state["code"] == code_version()
    assert set(state["datasets"]) == set(EXPORTERS)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(synth_world: Path, tmp_path: Path) -> None:
    # the fixture ran serially (tiny is below the parallel threshold); this run uses worker processes
    again = generate_world(
        tmp_path / "again", preset="tiny", seed=0, datasets=SMALL, contact_sheets=False, workers=2
    )
    for name in SMALL:
        first, second = _files(synth_world / name), _files(again / name)
        assert first.keys() == second.keys(), name
        different = [k for k in first if first[k] != second[k]]
        assert not different, f"{name}: {different[:3]}"
    other = generate_world(
        tmp_path / "other", preset="tiny", seed=1, datasets=["pa100k"], contact_sheets=False
    )
    assert _files(other / "pa100k")["annotation.mat"] != _files(synth_world / "pa100k")["annotation.mat"]
    assert _files(other / "pa100k")["data/000001.jpg"] != _files(synth_world / "pa100k")["data/000001.jpg"]


def test_cache_skips_matching_worlds_and_force_regenerates(tmp_path: Path) -> None:
    out = generate_world(tmp_path / "w", preset="tiny", seed=3, datasets=["icfg_pedes"], contact_sheets=False)
    marker = out / "icfg_pedes" / "ICFG-PEDES.json"
    stamp = marker.stat().st_mtime_ns
    marker_extra = out / "icfg_pedes" / "stale.txt"
    marker_extra.write_text("left by a previous run")
    generate_world(out, preset="tiny", seed=3, datasets=["icfg_pedes"], contact_sheets=False)
    assert marker.stat().st_mtime_ns == stamp and marker_extra.exists()  # skipped: key matched
    generate_world(out, preset="tiny", seed=3, datasets=["icfg_pedes"], contact_sheets=False, force=True)
    assert not marker_extra.exists()  # regenerated from scratch
    generate_world(out, preset="tiny", seed=4, datasets=["icfg_pedes"], contact_sheets=False)
    state = json.loads((out / ".world.json").read_text())
    assert state["seed"] == 4  # a different key regenerates


def test_contact_sheets_are_written_on_request(tmp_path: Path) -> None:
    from PIL import Image

    out = generate_world(tmp_path / "w", preset="tiny", seed=0, datasets=["lip"], contact_sheets=True)
    sheet = Image.open(out / "lip" / "contact_sheet.png")
    assert sheet.mode == "RGB" and sheet.size[0] > 100 and sheet.size[1] > 100


def test_unknown_names_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="preset"):
        generate_world(tmp_path, preset="huge")
    with pytest.raises(UserError, match="market1502"):
        generate_world(tmp_path, preset="tiny", datasets=["market1502"])
    assert get_preset("default").pa100k[0] > PRESETS["tiny"].pa100k[0]


def _generate_in_child(out: Path, log: Path, go) -> None:
    import os
    import time

    from saip_bench import locks

    def note(message: str) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {message}\n")

    locks._console_notify = note
    while not go.is_set():
        time.sleep(0.01)
    generate_world(out, preset="tiny", seed=0, datasets=["pa100k"], contact_sheets=False, workers=1)
    os._exit(0)


def test_two_processes_on_one_fresh_world_generate_it_once(tmp_path: Path, monkeypatch) -> None:
    """Issue 27: the second generator died with a raw FileExistsError or wrote every dataset again."""
    import os
    import time

    calls = tmp_path / "calls.txt"

    def slow_export(ctx) -> None:
        with open(calls, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        (ctx.root / "annotation.txt").write_text("x")
        time.sleep(1.0)

    monkeypatch.setitem(EXPORTERS, "pa100k", slow_export)
    log = tmp_path / "messages.txt"
    race(_generate_in_child, (tmp_path / "w", log))  # forked: the children inherit the patched exporter
    assert len(calls.read_text().split()) == 1
    owner = int(calls.read_text())
    assert f"waiting for synthetic world {tmp_path / 'w'} is in use by pid {owner}" in log.read_text()
    assert set(json.loads((tmp_path / "w" / ".world.json").read_text())["datasets"]) == {"pa100k"}
