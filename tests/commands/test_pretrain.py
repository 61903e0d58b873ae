"""``saip-bench pretrain`` setting overrides: dotted keys become nested mappings, values are JSON."""

import pytest

from saip_bench.commands.pretrain import parse_settings
from saip_bench.errors import UserError


def test_dotted_keys_nest_and_values_are_json():
    items = ["views.colour={\"jitter_p\": 0}", "views.n_local=4", "csm=false", "name=plain"]
    assert parse_settings(items, "--method-set") == {
        "views": {"colour": {"jitter_p": 0}, "n_local": 4}, "csm": False, "name": "plain",
    }


@pytest.mark.parametrize("item", ["novalue", "=3", "a=1 a.b=2"])
def test_malformed_settings_are_one_clear_error(item):
    items = item.split(" ")
    with pytest.raises(UserError, match="--set"):
        parse_settings(items, "--set")


# ------------------------------------------ issue #27: resume by default, --overwrite, --resume-from and
# --allow-config-change reach the API (the behaviour itself: tests/pretrain/test_guard_resume.py)
BASE = ["pretrain", "--method", "saip", "--backbone", "vit_tiny", "--data", "d", "--out", "o",
        "--no-progress"]


@pytest.fixture
def captured(monkeypatch, tmp_path):
    calls: list[dict] = []

    def fake_pretrain(*args, **kwargs):
        calls.append(kwargs)
        return tmp_path / "backbone.safetensors"

    monkeypatch.setattr("saip_bench.pretrain.api.pretrain", fake_pretrain)
    return calls


def test_pretrain_resumes_by_default_and_overwrite_is_explicit(captured):
    from saip_bench.cli import main

    assert main(BASE) == 0
    assert captured[-1]["resume"] is False and captured[-1]["overwrite"] is False  # False: continue if there
    assert captured[-1]["resume_from"] is None and captured[-1]["allow_config_change"] is False
    assert main([*BASE, "--overwrite"]) == 0 and captured[-1]["overwrite"] is True


def test_resume_from_with_a_config_change_reaches_the_api(captured, tmp_path):
    from saip_bench.cli import main

    ckpt = tmp_path / "last.pt"
    assert main([*BASE, "--resume-from", str(ckpt), "--allow-config-change", "--set", "lr=1e-4"]) == 0
    call = captured[-1]
    assert call["resume_from"] == ckpt and call["allow_config_change"] is True
    assert call["overrides"] == {"lr": 1e-4}


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--resume", "--overwrite"], "contradict"), (["--allow-config-change"], "--resume-from")],
)
def test_contradictory_resume_flags_are_one_line_errors(captured, capsys, extra, message):
    from saip_bench.cli import main

    assert main([*BASE, *extra]) == 2 and not captured
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ issue 25 item 3: --cfg-options
def test_cfg_options_is_the_same_override_as_set(captured):
    from saip_bench.cli import main

    assert main([*BASE, "--cfg-options", "lr=1e-3", "num_workers=2", "--set", "weight_decay=0.1"]) == 0
    assert captured[-1]["overrides"] == {"lr": 1e-3, "num_workers": 2, "weight_decay": 0.1}
    assert main([*BASE, "--set", "lr=1e-4"]) == 0 and captured[-1]["overrides"] == {"lr": 1e-4}  # alias kept


@pytest.mark.parametrize(
    ("item", "message"),
    [("lrr=1", "lrr: unknown key (known here:"), ("num_workers=-1", "num_workers: Input should be greater"),
     ("lr=fast", "lr: Input should be a valid number")],
)
def test_a_bad_pretrain_override_names_key_and_preset_file_before_training(captured, capsys, item, message):
    from saip_bench.cli import main

    assert main([*BASE, "--cfg-options", item]) == 2 and not captured
    err = capsys.readouterr().err
    assert message in err and "_trainer.yaml" in err and len(err.strip().splitlines()) == 1
