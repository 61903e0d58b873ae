"""AMP resolution: bf16 only where the device runs it natively (emulated bf16 is ~17x slower here)."""

from __future__ import annotations

import torch

from saip_bench import utils
from saip_bench.tasks.base import UnitContext


def test_resolve_amp_honours_a_disabled_request():
    assert utils.resolve_amp(False, "cpu") is False


def test_resolve_amp_follows_the_device_capability(monkeypatch):
    monkeypatch.delenv("SAIP_AMP", raising=False)
    assert utils.resolve_amp(True, "cpu") is utils.bf16_is_fast("cpu")
    monkeypatch.setattr(utils, "bf16_is_fast", lambda device_type: False)
    assert utils.resolve_amp(True, torch.device("cpu")) is False
    monkeypatch.setattr(utils, "bf16_is_fast", lambda device_type: True)
    assert utils.resolve_amp(True, "cpu") is True


def test_force_keeps_the_request(monkeypatch):
    monkeypatch.setattr(utils, "bf16_is_fast", lambda device_type: False)
    monkeypatch.setenv("SAIP_AMP", "force")
    assert utils.resolve_amp(True, "cpu") is True
    assert utils.resolve_amp(False, "cpu") is False


def test_cpu_capability_matches_onednn():
    assert utils.bf16_is_fast("cpu") is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert utils.bf16_is_fast("meta") is False


def test_unit_context_records_the_effective_setting(monkeypatch):
    monkeypatch.delenv("SAIP_AMP", raising=False)
    monkeypatch.setattr("saip_bench.tasks.base.resolve_amp", lambda requested, device: False)
    ctx = UnitContext(spec=None, protocol="linear", backbone=None, data=None, out_dir=None, amp=True)  # type: ignore[arg-type]
    assert ctx.amp is False



def test_atomic_writes_get_the_users_umask_mode(tmp_path):
    import os

    from saip_bench.utils import atomic_torch_save, atomic_write_json

    previous = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        atomic_torch_save({"a": 1}, tmp_path / "c.pt")
        os.umask(0o077)
        atomic_write_json(tmp_path / "private.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_exported_backbones_get_the_users_umask_mode(tmp_path):
    import os

    from saip_bench.backbones import create_backbone
    from saip_bench.pretrain.export import save_backbone

    previous = os.umask(0o022)
    try:
        path = save_backbone(create_backbone("vit_tiny", (32, 16)), tmp_path / "b.safetensors")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
