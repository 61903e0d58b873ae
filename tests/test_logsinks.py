"""``--logger`` sinks (saip_bench/logsinks.py): names checked before any work, TensorBoard event files read
back with TensorBoard's own reader, resume purging, rank 0 only, W&B offline (skipped without wandb)."""

import importlib.util
import math
from pathlib import Path

import pytest

from saip_bench import logsinks
from saip_bench.cli import main
from saip_bench.errors import UserError
from saip_bench.logsinks import RunLog, parse_loggers


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in ``folder`` as (step, value) pairs, through TensorBoard's
    reader (what ``tensorboard --logdir`` shows, purged steps left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


@pytest.fixture(autouse=True)
def default_loggers():
    """A CLI call sets the process default: every test starts and ends with ``jsonl``."""
    logsinks.set_default_loggers(None)
    yield
    logsinks.set_default_loggers(None)


def test_parse_loggers_reads_a_comma_list():
    assert parse_loggers("jsonl") == ("jsonl",)
    assert parse_loggers(" TensorBoard , jsonl,tensorboard") == ("tensorboard", "jsonl")
    assert parse_loggers(["jsonl", "tensorboard"]) == ("jsonl", "tensorboard")
    assert logsinks.resolve_loggers(None) == logsinks.DEFAULT_LOGGERS == ("jsonl",)


@pytest.mark.parametrize(("value", "named"), [("tensorbord", "'tensorbord' (did you mean 'tensorboard'?)"),
                                              ("jsonl,mlflow", "'mlflow'"), (" , ", "no logger named")])
def test_unknown_logger_is_a_clear_error(value, named):
    with pytest.raises(UserError, match="--logger") as info:
        parse_loggers(value)
    assert named in str(info.value)
    if "no logger" not in named:
        assert "expected a comma list of jsonl, tensorboard, wandb" in str(info.value)


def test_missing_package_names_the_install_command(monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb", "tensorboard") else found(name, *a))
    with pytest.raises(UserError, match=r"--logger wandb: the 'wandb' package is not installed; "
                                        r"pip install 'saip-bench\[wandb\]'"):
        parse_loggers("jsonl,wandb")
    with pytest.raises(UserError, match="--logger tensorboard: .*pip install tensorboard"):
        parse_loggers("tensorboard")


@pytest.mark.parametrize("command", [
    ["bench", "--dry-run"],
    ["eval", "--method", "random", "--task", "reid", "--dataset", "market1501", "--data-root", "nowhere"],
    ["pretrain", "--method", "saip", "--backbone", "vit_tiny", "--data", "nowhere", "--out", "nowhere"],
])
def test_cli_rejects_an_unknown_logger_before_any_work(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--logger", "jsonl,tensorbord"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --logger: unknown logger 'tensorbord' (did you mean 'tensorboard'?)" in err
    assert list(tmp_path.iterdir()) == []  # nothing was written: no run folder, no cache


def test_run_bench_rejects_an_unknown_logger(capsys):
    import run_bench

    with pytest.raises(SystemExit):
        run_bench.main(["--dry-run", "--logger", "tb"])
    assert "argument --logger: unknown logger 'tb'" in capsys.readouterr().err


def test_cli_logger_sets_the_process_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--dry-run", "--json", "--logger", "tensorboard,jsonl"]) == 0
    assert logsinks.default_loggers() == ("tensorboard", "jsonl")
    assert main(["bench", "--dry-run", "--json"]) == 0  # a later call without --logger: back to jsonl
    assert logsinks.default_loggers() == ("jsonl",)


def test_bench_workers_get_the_logger(tmp_path):
    from saip_bench.bench.parallel import worker_argv
    from saip_bench.bench.presets import load_bench_preset
    from saip_bench.bench.runner import BenchConfig

    config = BenchConfig(preset=load_bench_preset("default"), run_dir=tmp_path)
    assert "--logger" not in worker_argv(config, "default")
    logsinks.set_default_loggers(["jsonl", "tensorboard"])
    argv = worker_argv(config, "default")
    assert argv[argv.index("--logger") + 1] == "jsonl,tensorboard"


def test_tensorboard_events_read_back(tmp_path):
    with RunLog(tmp_path, ["tensorboard"], name="t", enabled=True) as run_log:
        assert not run_log.jsonl
        run_log.start(0)
        for step in (1, 2, 3):
            run_log.scalars({"loss": 1.0 / step, "lr": 0.1, "note": "text", "flag": True, "none": None}, step)
        run_log.summary({"final/mAP": 0.5})
    scalars = read_scalars(tmp_path)
    assert set(scalars) == {"loss", "lr", "final/mAP"}  # strings, bools and None are not scalars
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3]
    assert math.isclose(scalars["loss"][1][1], 0.5)
    assert scalars["final/mAP"] == [(3, 0.5)]  # at the last step


def test_resumed_run_purges_the_steps_it_redoes(tmp_path):
    with RunLog(tmp_path, ["tensorboard"], name="t", enabled=True) as first:
        for step in range(1, 6):  # killed after step 5; its last checkpoint was step 3
            first.scalars({"loss": float(step)}, step)
    with RunLog(tmp_path, ["tensorboard"], name="t", enabled=True) as resumed:
        resumed.start(3)
        for step in (4, 5, 6):
            resumed.scalars({"loss": 10.0 * step}, step)
    assert read_scalars(tmp_path)["loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
    with RunLog(tmp_path, ["tensorboard"], name="t", enabled=True) as fresh:  # from step 0: old files go
        fresh.scalars({"loss": 7.0}, 1)
    assert len(list(tmp_path.glob(logsinks.EVENTS_GLOB))) == 1
    assert read_scalars(tmp_path)["loss"] == [(1, 7.0)]


def test_other_ranks_and_jsonl_only_write_no_event_file(tmp_path, monkeypatch):
    with RunLog(tmp_path / "a", ["tensorboard"], name="t", enabled=False) as run_log:
        run_log.scalars({"loss": 1.0}, 1)
    monkeypatch.setenv("RANK", "1")  # under torchrun, not rank 0
    with RunLog(tmp_path / "b", ["tensorboard"], name="t") as run_log:
        run_log.scalars({"loss": 1.0}, 1)
    monkeypatch.delenv("RANK")
    with RunLog(tmp_path / "c", ["jsonl"], name="t") as run_log:
        assert run_log.jsonl
        run_log.scalars({"loss": 1.0}, 1)
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "c"))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (optional: pip install 'saip-bench[wandb]')")
def test_wandb_offline_run_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with RunLog(tmp_path / "unit", ["jsonl", "wandb"], name="unit", config={"seed": 0},
                enabled=True) as run_log:
        run_log.scalars({"train/loss": 1.0}, 1)
        run_log.scalars({"train/loss": 0.5}, 2)
        run_log.summary({"final/mAP": 0.25})
    runs = list((tmp_path / "unit" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_wandb_online_without_a_login_is_refused_when_parsed(tmp_path, monkeypatch):
    """An online W&B run without a key fails before any work (wandb itself finds out only in wandb.init)."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "wandb" else real_find_spec(name, *a))
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc_file = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc_file))
    with pytest.raises(UserError, match=r"not logged in to api\.wandb\.ai.*wandb login.*WANDB_MODE=offline"):
        parse_loggers("jsonl,wandb")
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    netrc_file.chmod(0o600)
    assert parse_loggers("wandb") == ("wandb",)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a private server: its own entry
    with pytest.raises(UserError, match="wandb.example.org"):
        parse_loggers("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert parse_loggers("wandb") == ("wandb",)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k3y")
    assert parse_loggers("wandb") == ("wandb",)
