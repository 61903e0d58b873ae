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
