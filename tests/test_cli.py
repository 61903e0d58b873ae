import json
import subprocess
import sys

from saip_bench.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "list" in out and "data" in out


def test_list_backbones_shows_three_with_params(capsys):
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    for name in ("vit_tiny", "tinyvit_5m", "starnet_s3"):
        assert name in out
    assert "5.5" in out  # vit_tiny params (M)


def test_user_error_is_one_line_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "saip_bench.cli", "data", "verify", "no_such_dataset",
         "--root", "/nonexistent"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("saip-bench: error:")


def test_help_imports_neither_torch_nor_scipy():
    """`saip-bench --help` (every sub-command's parser, the metric commands included) stays light: torch and
    scipy are imported where a command runs, not where it is listed (3.4 s before, under 1 s after;
    benchmarks/cli_startup.py, docs/performance.md)."""
    probe = ("import sys\nfrom saip_bench.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
             "    pass\nheavy = ('torch', 'scipy', 'timm')\n"
             "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def test_one_vocabulary_for_data_and_output_old_spellings_hidden_but_accepted():
    """Issue 25, item 5: --data-root (datasets), --pretrain-data (the pool), --out (what a command writes)
    on every command; the old spellings still parse to the same place and are no longer shown."""
    from saip_bench.cli import build_parser

    parser = build_parser()
    cases = [  # (argv with the documented spelling, the same with the old one, dest, value)
        (["bench", "--out", "r"], ["bench", "--run-dir", "r"], "run_dir", "r"),
        (["pretrain", "--method", "mae", "--backbone", "vit_tiny", "--pretrain-data", "p", "--out", "o"],
         ["pretrain", "--method", "mae", "--backbone", "vit_tiny", "--data", "p", "--out", "o"], "data", "p"),
        (["data", "verify", "lip", "--data-root", "d"], ["data", "verify", "lip", "--root", "d"], "root",
         "d"),
    ]
    for new, old, dest, value in cases:
        assert str(getattr(parser.parse_args(new), dest)) == value
        assert str(getattr(parser.parse_args(old), dest)) == value
    sub = {action.dest: action for action in parser._subparsers._group_actions}["command"].choices
    verify = {a.dest: a for a in sub["data"]._subparsers._group_actions}["data_command"].choices["verify"]
    shown_hidden = ((sub["bench"], "--out", "--run-dir"), (sub["pretrain"], "--pretrain-data", "--data"),
                    (verify, "--data-root", "--root"))
    for command, shown, hidden in shown_hidden:
        text = command.format_help()
        assert shown in text and f"{hidden} " not in text.replace(f"{hidden}-", ""), (shown, text)
    assert parser.parse_args(["bench"]).run_dir is None  # the alias adds no default of its own


def test_verify_takes_a_data_root_holding_the_dataset(tmp_path, capsys, monkeypatch):
    (tmp_path / "lip").mkdir()
    monkeypatch.delenv("SAIP_DATA", raising=False)
    assert main(["data", "verify", "lip", "--data-root", str(tmp_path), "--json"]) == 1  # empty: not usable
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] and all(str(tmp_path / "lip") in problem for problem in report["problems"])
    assert main(["data", "verify", "lip"]) == 2
    assert "--data-root DIR" in capsys.readouterr().err
