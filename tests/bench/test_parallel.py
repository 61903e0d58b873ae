import argparse

from saip_bench.bench.parallel import worker_argv
from saip_bench.commands.bench import add_bench_arguments, config_from_args


def test_worker_argv_reproduces_the_config(tmp_path):
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    argv = [
        "--preset",
        "smoke",
        "--run-dir",
        str(tmp_path / "r"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--limit",
        "3",
        "--overwrite",
        "always",
        "--methods",
        "saip",
        "--tasks",
        "reid",
        "lip",
        "--seeds",
        "0",
        "--checkpoint",
        f"saip/vit_tiny={tmp_path / 'x.safetensors'}",
        "--data-root",
        str(tmp_path / "d"),
        "--world",
        str(tmp_path / "w"),
    ]
    config = config_from_args(parser.parse_args(argv))
    again = config_from_args(parser.parse_args(worker_argv(config, "smoke")))
    for field in (
        "run_dir",
        "cache_dir",
        "limit",
        "overwrite",
        "methods",
        "tasks",
        "seeds",
        "checkpoints",
        "data_root",
        "pretrain_data",
        "device",
        "backbones",
        "world",
    ):
        assert getattr(again, field) == getattr(config, field), field
    assert again.preset == config.preset and not again.show_progress
