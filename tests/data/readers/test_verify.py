import json

import pytest

from saip_bench.cli import main
from saip_bench.data.readers import READERS, read_dataset, resolve_root, verify_dataset
from saip_bench.errors import UserError
from saip_bench.specs import DATASET_NAMES, get_dataset_card
from tests.data.readers.builders import build_market1501


def test_every_dataset_has_a_reader_and_a_card_naming_it():
    assert READERS.names() == sorted(DATASET_NAMES)
    for name in DATASET_NAMES:
        card = get_dataset_card(name)
        module, cls = card.reader.split(":")
        assert type(READERS.get(name)).__name__ == cls and type(READERS.get(name)).__module__ == module
        assert card.versions[card.default_version].layout


def test_resolve_root_explicit_env_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("SAIP_DATA", raising=False)
    with pytest.raises(UserError, match="--data-root DIR.*SAIP_DATA"):
        resolve_root("lip", None)
    (tmp_path / "lip").mkdir()
    monkeypatch.setenv("SAIP_DATA", str(tmp_path))
    assert resolve_root("lip", None) == tmp_path / "lip"
    assert resolve_root("lip", tmp_path) == tmp_path
    with pytest.raises(UserError, match="does not exist"):
        resolve_root("cihp", None)
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        resolve_root("nope", tmp_path)
    build_market1501(tmp_path / "market1501")
    assert read_dataset("market1501", None).counts()["query"]["images"] == 2


def test_unknown_version_is_a_user_error(tmp_path):
    build_market1501(tmp_path)
    with pytest.raises(UserError, match="no version 'v9'.*v15.09.15"):
        read_dataset("market1501", tmp_path, version="v9")


def test_real_data_counts_are_compared_with_the_card(tmp_path):
    build_market1501(tmp_path)
    report = verify_dataset("market1501", tmp_path)
    assert not report.usable and not report.synthetic
    assert (
        "split 'train': 3 images, expected 12936 (card market1501.yaml, version v15.09.15)" in report.problems
    )
    assert report.splits["gallery"] == {"images": 4, "identities": 3}


def test_synthetic_world_declares_itself_and_its_counts(tmp_path):
    root = tmp_path / "market1501"
    build_market1501(root)
    (tmp_path / ".world.json").write_text(json.dumps({"datasets": {"market1501": {}}}))
    report = verify_dataset("market1501", root)
    assert report.synthetic and report.usable, report.problems
    declared = {"datasets": {"market1501": {"counts": {"train": {"images": 3}, "query": {"images": 5}}}}}
    (tmp_path / ".world.json").write_text(json.dumps(declared))
    report = verify_dataset("market1501", root)
    assert report.problems == ["split 'query': 2 images, expected 5 (.world.json of this synthetic world)"]


def test_cli_json_is_one_object_even_when_unusable(tmp_path, capsys):
    build_market1501(tmp_path)
    (tmp_path / "query" / "0001_c1s1_001051_00.jpg").write_bytes(b"\xff\xd8\xff")  # truncated JPEG
    assert main(["data", "verify", "market1501", "--root", str(tmp_path), "--json", "--full"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"dataset", "version", "splits", "problems"}
    assert out["dataset"] == "market1501" and out["version"] == "v15.09.15" and out["usable"] is False
    assert out["splits"]["query"] == {"images": 2, "identities": 2}
    assert any(p.startswith(str(tmp_path / "query" / "0001_c1s1_001051_00.jpg")) for p in out["problems"])


def test_cli_exit_zero_only_when_usable(tmp_path, capsys):
    build_market1501(tmp_path)
    (tmp_path / ".world.json").write_text("{}")
    assert main(["data", "verify", "market1501", "--root", str(tmp_path)]) == 0
    assert "usable" in capsys.readouterr().out


def test_cli_unknown_dataset_and_missing_root_are_one_line_errors(tmp_path, capsys):
    # in-process (tests/test_cli.py runs the same through a subprocess)
    for args in (["no_such_dataset", "--root", "/nonexistent"], ["lip", "--root", str(tmp_path / "none")]):
        assert main(["data", "verify", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("saip-bench: error:") and len(err.strip().splitlines()) == 1


def test_every_problem_in_json_console_shortens_long_runs(tmp_path, capsys):
    from tests.data.readers.builders import build_lip

    build_lip(tmp_path)
    ids = (tmp_path / "train_id.txt").read_text().split() + [f"9_{i}" for i in range(60)]
    (tmp_path / "train_id.txt").write_text("\n".join(ids))
    report = verify_dataset("lip", tmp_path)
    missing_images = [
        p for p in report.problems if p.endswith("expected an image file, found nothing at that path")
    ]
    assert len(missing_images) == 60
    report.print()
    out = capsys.readouterr().out
    assert "... and 10 more problems of kind 'missing image' (--json lists every one)" in out


def test_sampled_verify_fails_on_a_zero_size_image_it_did_not_sample(tmp_path, capsys):
    """Issue 27: a 0-byte image outside the decoded sample passed as usable (its size was stat'ed)."""
    import numpy as np

    from tests.data.readers.builders import build_lip, write_label

    build_lip(tmp_path, ids={"train": [f"1_{i}" for i in range(120)], "val": ["2_0", "2_1"]})
    for label in tmp_path.rglob("*_segmentations/*.png"):  # the builder's ids run past 19 for 120 images
        write_label(label, np.zeros((30, 20)))
    (tmp_path / ".world.json").write_text("{}")  # synthetic: no card counts to compare
    empty = tmp_path / "TrainVal_images" / "train_images" / "1_117.jpg"
    empty.write_bytes(b"")
    assert main(["data", "verify", "lip", "--root", str(tmp_path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["problems"] == [f"{empty}: expected an image file, found an empty file (0 bytes)"]
