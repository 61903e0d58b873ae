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
