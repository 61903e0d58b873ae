import argparse
import json
from pathlib import Path

import pytest

from saip_bench.bench.store import OverwritePolicy
from saip_bench.cli import main
from saip_bench.commands.bench import add_bench_arguments, config_from_args
from saip_bench.specs import all_task_specs


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_arguments_map_to_config(tmp_path):
    config = parse(
        "--preset",
        "smoke",
        "--shard",
        "2/3",
        "--limit",
        "4",
        "--overwrite",
        "always",
        "--checkpoint",
        f"saip/vit_tiny={tmp_path / 'b.safetensors'}",
        "--run-dir",
        str(tmp_path),
    )
    assert config.preset.name == "smoke" and config.shard == (2, 3) and config.limit == 4
    assert config.overwrite is OverwritePolicy.ALWAYS and config.run_dir == tmp_path
    assert config.checkpoints == {("saip", "vit_tiny"): tmp_path / "b.safetensors"}
    assert parse().run_dir == Path("runs") / "default"
    assert config.loader_workers is None and parse("--loader-workers", "6").loader_workers == 6


def test_dry_run_json_lists_every_unit_without_generating_anything(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "--preset",
                "default",
                "--dry-run",
                "--json",
                "--run-dir",
                str(tmp_path / "r"),
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    plan = json.loads(capsys.readouterr().out)
    specs = all_task_specs()
    assert len(plan) == 5 * len(specs)
    assert {p["status"] for p in plan} <= {"run", "unsupported"}
    assert len({p["uid"] for p in plan}) == len(plan)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--shard", "3/2"], "1 <= i <= n"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--preset", "nope"], "unknown bench preset"),
        (["--checkpoint", "saip=x"], "method/backbone=PATH"),
        (["--loader-workers", "-1"], "--loader-workers must be 0 or more"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["bench", *argv, "--dry-run", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saip-bench: error:") and message in err and "Traceback" not in err


# ------------------------------------------------------------------ issue 25 item 3: --cfg-options
def test_cfg_options_reach_the_config_and_the_parallel_workers(tmp_path):
    from saip_bench.bench.parallel import worker_argv

    items = ["reid/market1501:protocols.finetune.schedule.lr=1e-4", "input_size=[256,128]"]
    config = parse("--cfg-options", *items, "--cfg-options", "protocols.fast.schedule.epochs=2")
    assert config.cfg_options == (*items, "protocols.fast.schedule.epochs=2")
    argv = worker_argv(config, "default")
    assert argv[argv.index("--cfg-options") + 1:][:3] == list(config.cfg_options)


def test_a_scoped_cfg_option_changes_one_dataset_of_the_plan(tmp_path, capsys):
    assert main(["bench", "--preset", "default", "--dry-run", "--json", "--run-dir", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "c"), "--methods", "saip",
                 "--cfg-options", "reid/market1501:input_size=[256,128]"]) == 0
    plan = json.loads(capsys.readouterr().out)
    changed = {p["dataset"] for p in plan if "+cfg-" in p["protocol"]}
    assert changed == {"market1501"} and len(plan) == len(all_task_specs())
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "option,message",
    [
        ("reid/market1501:protocols.finetune.schedule.lrr=1", "protocols.finetune.schedule.lrr: unknown key"),
        ("reid/market1501:protocols.finetune.schedule.epochs=many", "Input should be a valid number"),
        ("protocols.finetune.schedul.lr=1", "unknown key 'protocols.finetune.schedul.lr'"),
    ],
)
def test_a_bad_cfg_option_is_an_error_naming_key_and_spec_before_any_work(option, message, tmp_path, capsys):
    import run_bench

    code = run_bench.main(["--preset", "default", "--dry-run", "--run-dir", str(tmp_path / "r"),
                           "--cache-dir", str(tmp_path / "c"), "--cfg-options", option])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("run_bench.py: error: --cfg-options") and message in err
    assert ".yaml" in err and "Traceback" not in err and not (tmp_path / "c").exists()
