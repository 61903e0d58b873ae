"""Python logging of the package (saip_bench/logs.py): the console handler prints what the commands always
printed, ``-q``/``-v`` on ``saip-bench`` and ``run_bench.py`` change the level, contradictions are clear."""

import logging

import pytest

from saip_bench import logs
from saip_bench.cli import build_parser, main
from saip_bench.errors import UserError

PACKAGE = logging.getLogger("saip_bench")


@pytest.fixture(autouse=True)
def info_level():
    """Tests that pass -q/-v leave the package logger as every other test expects it: INFO."""
    logs.set_verbosity()
    yield
    logs.set_verbosity()


def test_level_for_counts():
    assert logs.level_for() == logging.INFO
    assert logs.level_for(verbose=1) == logs.level_for(verbose=2) == logging.DEBUG
    assert logs.level_for(quiet=1) == logging.WARNING
    assert logs.level_for(quiet=2) == logging.ERROR
    with pytest.raises(UserError, match="-v/--verbose and -q/--quiet contradict"):
        logs.level_for(verbose=1, quiet=1)


def test_package_messages_print_on_the_console_by_level(capsys):
    child = logging.getLogger("saip_bench.some.module")
    child.info("an info line %d", 1)
    child.debug("a debug line")
    child.warning("a warning line")
    err = capsys.readouterr().err
    assert "an info line 1\n" in err and "a warning line\n" in err and "debug" not in err
    logs.set_verbosity(quiet=1)
    child.info("hidden info")
    child.warning("shown warning")
    err = capsys.readouterr().err
    assert "hidden" not in err and "shown warning" in err
    logs.set_verbosity(verbose=1)
    child.debug("shown debug [brackets stay]")
    assert "shown debug [brackets stay]" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "level"), [
    (["list", "tasks"], logging.INFO),
    (["-q", "list", "tasks"], logging.WARNING),
    (["list", "-qq", "tasks"], logging.ERROR),
    (["-v", "list", "tasks"], logging.DEBUG),
    (["list", "--verbose", "tasks"], logging.DEBUG),
])
def test_cli_verbosity_sets_the_level(argv, level, capsys):
    assert main(argv) == 0
    assert PACKAGE.level == level
    assert "reid" in capsys.readouterr().out  # the table prints whatever the level


def test_cli_verbose_and_quiet_contradict(capsys):
    assert main(["-v", "list", "-q", "tasks"]) == 2
    assert "-v/--verbose and -q/--quiet contradict" in capsys.readouterr().err


def test_subcommand_flag_does_not_reset_the_main_one():
    args = build_parser().parse_args(["-q", "bench", "--dry-run"])
    assert (args.verbose, args.quiet) == (0, 1)
    args = build_parser().parse_args(["bench", "-v", "--dry-run"])
    assert (args.verbose, args.quiet) == (1, 0)


def test_run_bench_quiet_sets_the_level(tmp_path):
    import run_bench

    assert run_bench.main(["-q", "--dry-run", "--json", "--run-dir", str(tmp_path / "run")]) == 0
    assert PACKAGE.level == logging.WARNING


def test_worker_flags_follow_the_level():
    assert logs.verbosity_flags() == []
    logs.set_verbosity(verbose=1)
    assert logs.verbosity_flags() == ["-v"]
    logs.set_verbosity(quiet=2)
    assert logs.verbosity_flags() == ["-qq"]
