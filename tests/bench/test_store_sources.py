"""Loaded records know the file they came from (boards link to it), and are the records themselves."""

import json

from saip_bench.bench.store import StoredRecord, load_records
from saip_bench.specs import load_record
from tests.leaderboard.fakes import rec


def test_loaded_records_carry_their_file_and_nothing_else(tmp_path):
    record = rec("saip", "market1501", 60.0, half_width=1.0)
    path = tmp_path / "records" / "one.json"
    path.parent.mkdir()
    path.write_text(json.dumps(record.model_dump(mode="json")))
    (loaded,) = load_records([tmp_path])
    assert isinstance(loaded, StoredRecord) and loaded.source == path.resolve()
    assert loaded.model_dump(mode="json") == load_record(path).model_dump(mode="json")  # no extra field
    assert getattr(record, "source", None) is None  # a record made in memory has no file
