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
