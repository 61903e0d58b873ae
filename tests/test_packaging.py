"""``pip install .`` ships the specs, cards and paper numbers (issue #25 item 1), and SAIP_SPECS adds to
or overrides them.

The wheel test builds from a copy of the source (a stale ``build/`` in the checkout cannot leak into it),
offline (``--no-build-isolation``: the venv's setuptools), installs it with ``--target`` into a temporary
folder and runs it from another folder with that folder first on ``sys.path``: the checkout's editable
finder sits at the end of ``sys.meta_path``, so the installed copy wins, and the test checks that it did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from saip_bench.errors import SpecError, UserError
from saip_bench.specs import (
    SPECS_ENV,
    all_task_specs,
    dataset_card_paths,
    get_dataset_card,
    get_task_spec,
    resource_dir,
    spec_sources,
    task_spec_path,
    task_spec_paths,
)

REPO = Path(__file__).resolve().parents[1]
PAIRS = [
    ("attributes", "pa100k"), ("attributes", "peta"), ("detection", "crowdhuman"),
    ("fashion", "fashionpedia"), ("multi_parsing", "cihp"), ("parsing", "lip"), ("pose", "coco"),
    ("reid", "market1501"), ("reid", "msmt17"), ("t2i_retrieval", "cuhk_pedes"),
    ("t2i_retrieval", "icfg_pedes"), ("wholebody", "coco_wholebody"),
]
# What the build needs, copied as in the checkout (pyproject maps the last three into the package).
SOURCES = ["pyproject.toml", "README.md", "saip_bench", "tasks", "datasets", "leaderboards/paper"]


@pytest.fixture(autouse=True)
def no_user_specs(monkeypatch):
    monkeypatch.delenv(SPECS_ENV, raising=False)


def test_every_code_package_is_listed_in_pyproject():
    """pyproject lists packages by hand (``packages.find`` cannot add the mapped data folders)."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "saip_bench").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {f"saip_bench.resources.{kind}" for kind in ("tasks", "datasets", "paper")}


def test_checkout_finds_the_top_level_folders():
    assert resource_dir("tasks") == REPO / "tasks"
    assert resource_dir("paper") == REPO / "leaderboards" / "paper"
    assert [(p.parent.name, p.stem) for p in task_spec_paths()] == PAIRS
    assert spec_sources() == {"origin": "checkout", "tasks": str(REPO / "tasks"),
                              "datasets": str(REPO / "datasets"), "user": None}


def test_user_specs_add_and_override(tmp_path, monkeypatch):
    user = tmp_path / "my_specs"
    (user / "tasks" / "reid").mkdir(parents=True)
    (user / "datasets").mkdir()
    override = (REPO / "tasks" / "reid" / "market1501.yaml").read_text()
    override = override.replace("\ndescription:", "\ndescription: USER OVERRIDE.", 1)
    assert "USER OVERRIDE" in override
    (user / "tasks" / "reid" / "market1501.yaml").write_text(override)
    extra = (REPO / "tasks" / "t2i_retrieval" / "cuhk_pedes.yaml").read_text().replace(
        "task: t2i_retrieval", "task: reid")
    (user / "tasks" / "reid" / "cuhk_pedes.yaml").write_text(extra)
    card = (REPO / "datasets" / "peta.yaml").read_text()
    card = card.replace("\nofficial_name: ", "\nofficial_name: USER CARD ", 1)
    (user / "datasets" / "peta.yaml").write_text(card)
    monkeypatch.setenv(SPECS_ENV, str(user))

    assert get_task_spec("reid", "market1501").description.startswith("USER OVERRIDE")
    assert task_spec_path("reid", "market1501") == user / "tasks" / "reid" / "market1501.yaml"
    assert task_spec_path("reid", "msmt17") == REPO / "tasks" / "reid" / "msmt17.yaml"
    specs = all_task_specs()
    assert len(specs) == 13 and "reid/cuhk_pedes" in specs
    assert len(task_spec_paths()) == 13 and len(dataset_card_paths()) == 12
    assert get_dataset_card("peta").official_name.startswith("USER CARD")
    assert spec_sources()["user"] == str(user.resolve()) and spec_sources()["origin"] == "checkout"
    # An explicit root still means that root alone.
    assert len(task_spec_paths(user)) == 2

    (user / "tasks" / "reid" / "market1501.yaml").write_text(override + "colour: blue\n")
    with pytest.raises(SpecError, match=r"my_specs/tasks/reid/market1501.yaml.*colour"):
        all_task_specs()
    monkeypatch.setenv(SPECS_ENV, str(tmp_path / "missing"))
    with pytest.raises(UserError, match="SAIP_SPECS"):
        task_spec_paths()


def test_unknown_spec_names_the_folders():
    with pytest.raises(SpecError, match=r"no spec reid/lip.yaml in .*tasks \(did you mean 'parsing/lip'\?\); "
                                        r"known task/dataset pairs: "):
        get_task_spec("reid", "lip")


CHECK_INSTALLED = """
import sys
from pathlib import Path
site = Path(sys.argv[1])
import saip_bench
assert Path(saip_bench.__file__).is_relative_to(site), saip_bench.__file__
from saip_bench.specs import all_task_specs, checkout_root, get_dataset_card, get_task_spec, spec_sources
from saip_bench.leaderboard.paper import load_paper, paper_dir
from saip_bench.bench.provenance import code_revision
sources = spec_sources()
assert sources["origin"] == "package" and Path(sources["tasks"]).is_relative_to(site), sources
assert checkout_root() is None and code_revision() == "unknown"
assert len(all_task_specs()) == 12
assert get_task_spec("pose", "coco").metric.main and get_dataset_card("market1501").name == "market1501"
paper = load_paper()
assert len(paper) == 36 and paper_dir().is_relative_to(site), paper_dir()
print("installed copy OK", sources)
"""


def test_built_wheel_lists_and_reads_every_spec(tmp_path):
    src = tmp_path / "src"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    env = {k: v for k, v in os.environ.items() if k not in (SPECS_ENV, "PYTHONPATH")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"),
                    str(src)], check=True, env=env, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("saip_bench-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, env=env, capture_output=True, timeout=300)

    # Every code file and every data file of the source is in the installed copy.
    def files(root: Path, pattern: str) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.glob(pattern) if "__pycache__" not in p.parts}

    assert files(site / "saip_bench", "**/*.py") == files(src / "saip_bench", "**/*.py")
    for inside, outside in (("tasks", "tasks"), ("datasets", "datasets"), ("paper", "leaderboards/paper")):
        assert files(site / "saip_bench" / "resources" / inside, "**/*.*") == files(src / outside, "**/*.*")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.update(PYTHONPATH=str(site), COLUMNS="200")
    listed = subprocess.run([str(site / "bin" / "saip-bench"), "list", "tasks"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in listed.stdout.splitlines()
            if line.count("│") > 2]
    assert sorted(tuple(row) for row in rows if row[0] != "task") == PAIRS, listed.stdout
    checked = subprocess.run([sys.executable, "-c", CHECK_INSTALLED, str(site)], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "installed copy OK" in checked.stdout
