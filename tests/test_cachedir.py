"""The cache lives in the user cache folder (or $SAIP_CACHE_DIR / --cache-dir), never in the current folder,
and a checkpoint in that shared cache is keyed by its resolved preset and the pretraining code."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from saip_bench.cachedir import default_cache_dir
from saip_bench.cli import main


def test_env_var_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAIP_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


def test_without_env_var_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SAIP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "saip-bench"


def test_bench_and_eval_default_to_it_not_to_the_working_folder(tmp_path, monkeypatch):
    from saip_bench.commands.bench import add_bench_arguments, config_from_args

    monkeypatch.setenv("SAIP_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    assert config_from_args(parser.parse_args([])).cache_dir == tmp_path / "c"
    assert config_from_args(parser.parse_args(["--cache-dir", "here"])).cache_dir == Path("here")
    from saip_bench.cli import build_parser

    args = build_parser().parse_args(["eval", "--method", "random", "--task", "reid",
                                      "--dataset", "market1501"])
    assert args.cache_dir is None  # resolved to default_cache_dir() when the runner is built


def test_cache_command_path_info_and_clear(tmp_path, monkeypatch, capsys):
    root = tmp_path / "c"
    monkeypatch.setenv("SAIP_CACHE_DIR", str(root))
    assert main(["cache", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(root)
    assert main(["cache"]) == 0
    assert "nothing cached yet" in capsys.readouterr().out
    (root / "world").mkdir(parents=True)
    (root / "world" / "a.bin").write_bytes(b"x" * 2048)
    assert main(["cache", "info"]) == 0
    assert "world" in capsys.readouterr().out and root.exists()
    assert main(["cache", "clear"]) == 2  # refuses without --yes, deletes nothing
    assert "--yes" in capsys.readouterr().err and (root / "world" / "a.bin").exists()
    assert main(["cache", "clear", "--yes"]) == 0
    assert not root.exists()


@pytest.fixture
def fresh_fingerprints():
    from saip_bench.bench import checkpoints

    checkpoints.pretraining_fingerprint.cache_clear()
    yield checkpoints
    checkpoints.pretraining_fingerprint.cache_clear()


def test_checkpoint_key_follows_the_resolved_preset_and_the_code(fresh_fingerprints, monkeypatch):
    checkpoints = fresh_fingerprints
    import saip_bench.pretrain.trainer as trainer

    def key() -> str:
        checkpoints.pretraining_fingerprint.cache_clear()
        return checkpoints.checkpoint_key("saip", "vit_tiny", "quick", 0, None, "data", False)

    base = key()
    assert key() == base
    real = trainer.load_preset

    def edited(method, preset, overrides=None):  # the quick preset file edited: another lr
        train, method_settings = real(method, preset, overrides)
        return train.model_copy(update={"lr": train.lr * 2}), method_settings

    monkeypatch.setattr(trainer, "load_preset", edited)
    assert key() != base
    monkeypatch.setattr(trainer, "load_preset", real)
    assert key() == base
    monkeypatch.setattr(checkpoints, "pretraining_code_version", lambda: "another-trainer")
    assert key() != base
