"""data_fingerprint: a bounded read (every file's path and size, annotation files, a fixed sample of images)
that still changes when the data does, and does not change when only file times do."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from saip_bench.bench import provenance
from saip_bench.bench.provenance import data_fingerprint


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for i in range(100):
        (tmp_path / "images" / f"{i:03d}.jpg").write_bytes(bytes([i]) * 100)
    (tmp_path / "labels.json").write_text('{"a": 1}')
    return tmp_path


def sampled_image(folder: Path) -> Path:
    names = sorted(f"images/{i:03d}.jpg" for i in range(100))
    first = sorted(names, key=lambda rel: hashlib.sha1(rel.encode()).hexdigest())[0]
    return folder / first


def test_reads_only_the_annotations_and_a_bounded_sample_of_images(folder, monkeypatch):
    opened: list[str] = []
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    data_fingerprint(folder, sample=10)
    assert "labels.json" in opened
    assert sum(name.endswith(".jpg") for name in opened) == 10


def test_changes_with_annotations_files_and_sampled_content(folder):
    before = data_fingerprint(folder, sample=4)
    assert data_fingerprint(folder, sample=4) == before
    (folder / "labels.json").write_text('{"a": 2}')  # same size, other content
    after_label = data_fingerprint(folder, sample=4)
    assert after_label != before
    image = sampled_image(folder)
    image.write_bytes(b"\xff" * 100)  # same size, sampled: detected
    assert data_fingerprint(folder, sample=4) != after_label
    (folder / "images" / "new.jpg").write_bytes(b"x")
    assert data_fingerprint(folder, sample=4) != after_label


def test_file_times_do_not_change_it(folder):
    before = data_fingerprint(folder)
    for path in folder.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert data_fingerprint(folder) == before


def test_missing_folder():
    assert data_fingerprint(Path("/nonexistent/saip")) == "missing"
    assert provenance.FINGERPRINT_SAMPLE == 64
