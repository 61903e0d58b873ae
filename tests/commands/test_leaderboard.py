from saip_bench.bench.store import RecordStore
from saip_bench.cli import main
from tests.leaderboard.fakes import three_methods


def test_leaderboard_command_writes_every_format(tmp_path, capsys):
    store = RecordStore(tmp_path / "run" / "records")
    for record in three_methods():
        store.write(record.model_copy(update={"identity": record.identity.model_copy(update={"task": "t"})}))
    out = tmp_path / "boards"
    assert main(["leaderboard", str(tmp_path / "run"), "--out", str(out), "--compare", "paper"]) == 0
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "leaderboard.md",
        "leaderboard.html",
        "summary.csv",
        "compare_paper_synthetic-fast.csv",
        "plots/radar_synthetic-fast_vit_tiny.png",
        "plots/pareto_synthetic-fast.png",
    } <= names
    assert "9 record(s)" in capsys.readouterr().err


def test_no_records_is_a_user_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no records found" in capsys.readouterr().err
