"""install.sh torch modes (cpu / keep / cuda), checked through its dry run: nothing is downloaded.

Why: a GPU user's CUDA torch must survive ``./install.sh`` (no ``torch==2.13.0`` CPU pin may reach pip there),
while the default CPU path must keep its exact pins. A fake ``python`` answers install.sh's probe the way a
given interpreter would (Python version, torch version, torch.version.cuda, torchvision, site dir).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
GPU_SITE = "/opt/gpu env/site-packages"  # a space: the site dir must survive the probe's parsing


def _fake_python(path: Path, line: str) -> Path:
    """An executable that prints install.sh's probe answer ("PYVER TORCH CUDA TORCHVISION SITE")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{line}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _plan(tmp_path: Path, probe: str, mode: str | None = None, venv_probe: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAIP_", "PIP_"))}
    venv = tmp_path / "venv"
    if venv_probe is not None:
        _fake_python(venv / "bin" / "python", venv_probe)
    env.update(SAIP_INSTALL_DRY_RUN="1", PYTHON=str(_fake_python(tmp_path / "python", probe)), VENV=str(venv))
    if mode is not None:
        env["SAIP_TORCH"] = mode
    result = subprocess.run(["bash", str(REPO / "install.sh")], env=env, capture_output=True, text=True,
                            timeout=60)
    return result, venv


def _constraints(out: str) -> list[str]:
    """The lines of the constraints file the plan writes (empty when it uses constraints.txt as is)."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("+ write ") and line.endswith(".saip-constraints.txt:"):
            return [x for x in lines[i + 1:] if not x.startswith(("+ ", "install.sh:"))]
    return []


def _torch_lines(lines: list[str]) -> list[str]:
    return [x for x in lines if x.lower().startswith(("torch==", "torchvision=="))]


CUDA_312 = f"3.12 2.11.0+cu130 13.0 0.26.0 {GPU_SITE}"


def test_default_on_cpu_python_311_is_todays_pinned_cpu_install(tmp_path):
    result, venv = _plan(tmp_path, "3.11 - - - -")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SAIP_TORCH=cpu" in out
    assert f"+ PIP_CONSTRAINT={REPO}/constraints.txt" in out
    assert "pip install -q torch==2.13.0" in out
    assert "pip install -q -e .[test]" in out
    assert not venv.exists()  # a dry run touches nothing


@pytest.mark.parametrize("mode", [None, "keep"])
def test_cuda_torch_of_python_312_is_kept(tmp_path, mode):
    result, venv = _plan(tmp_path, CUDA_312, mode)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SAIP_TORCH=keep (torch 2.11.0+cu130 from python)" in out
    assert "torch==2.13.0" not in out and "torchvision==0.28.0" not in out
    assert "uninstall" not in out
    # pip may not replace the kept torch: the constraints pin it at its installed version.
    assert sorted(_torch_lines(_constraints(out))) == ["torch==2.11.0+cu130", "torchvision==0.26.0"]
    assert f"+ PIP_CONSTRAINT={venv}/.saip-constraints.txt" in out
    # The new venv sees the CUDA torch through a .pth file naming its site dir.
    assert f"+ write {venv}/lib/python3.12/site-packages/saip-keep-torch.pth:\n{GPU_SITE}\n" in out
    assert "pip install -q -e .[test]" in out
    assert not venv.exists()


def test_cuda_torch_already_in_the_venv_is_kept_in_place(tmp_path):
    result, _ = _plan(tmp_path, "3.12 - - - -", venv_probe=f"3.12 2.11.0+cu130 13.0 0.26.0 {tmp_path}/x")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SAIP_TORCH=keep (torch 2.11.0+cu130 from venv)" in out
    assert "torch==2.13.0" not in out and ".pth" not in out and "-m venv" not in out
    assert sorted(_torch_lines(_constraints(out))) == ["torch==2.11.0+cu130", "torchvision==0.26.0"]


def test_keep_replaces_a_cpu_torch_left_in_the_venv(tmp_path):
    result, _ = _plan(tmp_path, CUDA_312, venv_probe=f"3.12 2.13.0+cpu - 0.28.0 {tmp_path}/x")
    assert result.returncode == 0, result.stderr
    assert "pip uninstall -y -q torch torchvision" in result.stdout  # it would shadow the linked CUDA torch
    assert "torch==2.13.0" not in result.stdout


def test_cpu_after_keep_drops_the_link_to_the_cuda_torch(tmp_path):
    pth = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "saip-keep-torch.pth"
    pth.parent.mkdir(parents=True)
    pth.write_text(f"{GPU_SITE}\n")
    result, _ = _plan(tmp_path, "3.11 2.11.0+cu130 13.0 0.26.0 /x", "cpu",
                      venv_probe=f"3.11 2.11.0+cu130 13.0 0.26.0 {GPU_SITE}")
    assert result.returncode == 0, result.stderr
    assert "install.sh: SAIP_TORCH=cpu\n" in result.stdout
    assert f"+ rm {pth}" in result.stdout and "pip install -q torch==2.13.0" in result.stdout
    assert pth.exists()  # dry run


def test_cuda_mode_takes_torch_from_the_index_without_the_cpu_pin(tmp_path):
    result, _ = _plan(tmp_path, "3.12 - - - -", "cuda")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SAIP_TORCH=cuda" in out and ".pth" not in out
    assert not any(word.startswith("torch==") for word in out.split())  # (open_clip_torch== is no torch pin)
    constraints = _constraints(out)
    assert constraints and not _torch_lines(constraints)
    assert "numpy==" in "\n".join(constraints)  # the other pins stay


@pytest.mark.parametrize(
    ("probe", "mode", "message"),
    [
        ("3.12 - - - -", None, "for Python 3.11"),  # the CPU pins are cp311 wheels
        (CUDA_312, "cpu", "for Python 3.11"),
        ("3.12 2.13.0+cpu - 0.28.0 /x", "keep", "no CUDA torch"),
        ("3.11 - - - -", "gpu", "SAIP_TORCH is cpu, keep or cuda"),
    ],
)
def test_refusals(tmp_path, probe, mode, message):
    result, _ = _plan(tmp_path, probe, mode)
    assert result.returncode != 0
    assert message in result.stderr


def test_keep_refuses_a_venv_of_another_python(tmp_path):
    result, _ = _plan(tmp_path, CUDA_312, venv_probe="3.11 - - - -")
    assert result.returncode == 1
    assert "is Python 3.11 but" in result.stderr


def test_pyproject_ranges_admit_cpu_pin_and_a_cuda_build_and_constraints_keep_the_cpu_pin():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = {r.name: r for r in map(Requirement, project["dependencies"])}
    for version in ("2.13.0", "2.11.0", "2.11.0+cu130"):
        assert reqs["torch"].specifier.contains(version), version
    for version in ("0.28.0", "0.26.0"):
        assert reqs["torchvision"].specifier.contains(version), version
    assert Requirement(f"python{project['requires-python']}").specifier.contains("3.12")
    pins = (REPO / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in pins and "torchvision==0.28.0" in pins


def test_pip_sees_a_torch_linked_by_the_pth_file_as_installed(tmp_path):
    """The keep mechanism with real pip, offline: a venv's .pth names a site dir with a (fake) CUDA torch."""
    site = tmp_path / "gpu site"
    for name, version, requires in (("torch", "2.11.0+cu130", ""),
                                    ("torchvision", "0.26.0", "Requires-Dist: torch==2.11.0\n")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py_ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    (venv / "lib" / f"python{py_ver}" / "site-packages" / "saip-keep-torch.pth").write_text(f"{site}\n")
    pins = tmp_path / "pins.txt"
    pins.write_text("torch==2.11.0+cu130\ntorchvision==0.26.0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    # No config files (no find-links, no extra index) and no index: pip sees only what is installed;
    # without the .pth it finds no torch at all.
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_CONSTRAINT=str(pins), PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--dry-run",
         "torch>=2.4,<3", "torchvision>=0.19,<1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Requirement already satisfied: torch" in result.stdout
    assert "Would install" not in result.stdout
