import json

import pytest

from saip_bench.bench.store import RecordStore
from saip_bench.cli import main
from tests.leaderboard.fakes import three_methods


@pytest.fixture
def records_dir(tmp_path):
    store = RecordStore(tmp_path / "run" / "records")
    for record in three_methods(seeds=(0, 1)):
        store.write(record.model_copy(update={"identity": record.identity.model_copy(update={"task": "t"})}))
    return tmp_path / "run"


def write_expected(path, entries, tolerance=None):
    data = {"expected": entries}
    if tolerance is not None:
        data["tolerance"] = tolerance
    path.write_text(json.dumps(data))
    return path


def test_snapshot_then_verify_passes(records_dir, tmp_path, capsys):
    expected = tmp_path / "expected.json"
    assert main(["verify", str(records_dir), "--write-expected", str(expected)]) == 0
    snapshot = json.loads(expected.read_text())["expected"]
    assert len(snapshot) == 9
    market = next(e for e in snapshot if e["method"] == "saip" and e["dataset"] == "market1501")
    assert market["score"] == 90.5 and market["metric"] == "rank1"  # mean over seeds 0, 1
    assert main(["verify", str(records_dir), "--expected", str(expected)]) == 0


def test_regression_beyond_tolerance_fails(records_dir, tmp_path):
    entry = {"method": "saip", "backbone": "vit_tiny", "dataset": "market1501", "score": 91.0}
    path = write_expected(tmp_path / "e.json", [entry])
    assert main(["verify", str(records_dir), "--expected", str(path)]) == 1  # 90.5 < 91.0
    assert main(["verify", str(records_dir), "--expected", str(path), "--tolerance", "0.6"]) == 0
    path = write_expected(tmp_path / "e.json", [entry], tolerance=1.0)  # file default
    assert main(["verify", str(records_dir), "--expected", str(path)]) == 0


def test_direction_min_regression_is_a_higher_value(records_dir, tmp_path, capsys):
    # crowdhuman mMR (lower is better): saip has 50.5
    worse = {"method": "saip", "backbone": "vit_tiny", "dataset": "crowdhuman", "score": 50.0}
    better = {"method": "saip", "backbone": "vit_tiny", "dataset": "crowdhuman", "score": 51.0}
    assert (
        main(["verify", str(records_dir), "--expected", str(write_expected(tmp_path / "a.json", [worse]))])
        == 1
    )
    assert (
        main(
            [
                "verify",
                str(records_dir),
                "--expected",
                str(write_expected(tmp_path / "b.json", [better])),
                "--json",
            ]
        )
        == 0
    )
    checks = json.loads(capsys.readouterr().out)
    assert checks[0]["status"] == "better"


def test_seed_and_metric_selection(records_dir, tmp_path, capsys):
    entry = {
        "method": "saip",
        "backbone": "vit_tiny",
        "dataset": "market1501",
        "seed": 1,
        "metric": "aux",
        "score": 45.0,
    }
    assert (
        main(
            [
                "verify",
                str(records_dir),
                "--expected",
                str(write_expected(tmp_path / "a.json", [entry])),
                "--json",
            ]
        )
        == 0
    )
    check = json.loads(capsys.readouterr().out)[0]
    assert check["observed"] == 45.0 and check["records"] == 1


def test_missing_record_fails_unless_allowed(records_dir, tmp_path):
    entry = {"method": "dino", "backbone": "starnet_s3", "dataset": "lip", "score": 1.0}
    path = write_expected(tmp_path / "a.json", [entry])
    assert main(["verify", str(records_dir), "--expected", str(path)]) == 1
    assert main(["verify", str(records_dir), "--expected", str(path), "--allow-missing"]) == 0


def test_bad_expected_file_is_a_one_line_error(records_dir, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"expected": [{"method": "saip", "score": "high"}]}))
    assert main(["verify", str(records_dir), "--expected", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saip-bench: error:") and "bad.json" in err and "backbone" in err
