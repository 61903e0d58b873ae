"""Checkpoint cache keys: everything that makes two pretrainings differ."""

from saip_bench.bench.checkpoints import checkpoint_key
from tests.ranks import race


def test_checkpoint_key_separates_bf16_and_fp32_pretraining():
    args = ("saip", "vit_tiny", "quick", 0, 60, "data")
    assert checkpoint_key(*args, bf16_native=False) != checkpoint_key(*args, bf16_native=True)
    assert checkpoint_key(*args, bf16_native=False) == checkpoint_key(*args, bf16_native=False)


# ---------------------------------------------------------------- issue 27: one owner, a stable weights hash
def _ensure_in_child(cache_dir, out, go) -> None:
    """One process asking the shared cache for a checkpoint; the pretraining takes a while."""
    import json
    import os
    import time
    from dataclasses import asdict

    from saip_bench import locks
    from saip_bench.bench.checkpoints import CheckpointCache
    from tests.bench.fakes import FakePretrainer, fake_loader

    def note(message: str) -> None:
        with open(out / f"messages-{os.getpid()}.txt", "a") as handle:
            handle.write(message + "\n")

    locks._console_notify = note

    class SlowPretrainer(FakePretrainer):
        def __call__(self, *, out_dir, **kw):
            (out / "lock-seen.json").write_text(out_dir.with_name(out_dir.name + ".lock").read_text())
            with open(out / "pretrain-calls.txt", "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(1.0)
            return super().__call__(out_dir=out_dir, **kw)

    while not go.is_set():
        time.sleep(0.01)
    cache = CheckpointCache(cache_dir, pretrainer=SlowPretrainer(), loader=fake_loader)
    info = cache.ensure("saip", "tiny", "quick", 0, 5, data_dir=out, data_fingerprint="d", bf16_native=False)
    (out / f"info-{os.getpid()}.json").write_text(json.dumps(asdict(info)))
    os._exit(0)


def test_a_second_process_waits_for_the_pretraining_and_is_told_whom_it_waits_for(tmp_path):
    import json
    import socket

    pids = race(_ensure_in_child, (tmp_path / "cache", tmp_path))
    calls = (tmp_path / "pretrain-calls.txt").read_text().split()
    assert len(calls) == 1  # pretrained once
    owner = int(calls[0])
    seen = json.loads((tmp_path / "lock-seen.json").read_text())  # the lock names its owner
    assert seen["pid"] == owner and seen["host"] == socket.gethostname()
    assert seen["purpose"] == "pretraining saip/tiny seed 0"
    waiter = next(pid for pid in pids if pid != owner)
    messages = (tmp_path / f"messages-{waiter}.txt").read_text()
    assert f"waiting for checkpoint cache entry {tmp_path / 'cache'}" in messages
    assert f"is in use by pid {owner} on host {socket.gethostname()}" in messages
    infos = [json.loads((tmp_path / f"info-{pid}.json").read_text()) for pid in pids]
    assert infos[0] == infos[1] and infos[0]["weights_hash"]


def _safetensors_with_header(path, tensors, metadata_items) -> None:
    """A safetensors file written by hand, so the header's metadata order is ours to choose."""
    import json
    import struct

    header = {"__metadata__": dict(metadata_items)}
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        data = tensor.contiguous().numpy().tobytes()
        span = [offset, offset + len(data)]
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": span}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_weights_hash_ignores_the_safetensors_header_order_and_sees_every_tensor(tmp_path):
    import torch

    from saip_bench.bench.checkpoints import weights_hash
    from saip_bench.utils import file_sha256

    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}
    meta = [("format", "saip-bench-backbone"), ("version", "1")]
    _safetensors_with_header(tmp_path / "one.safetensors", tensors, meta)
    _safetensors_with_header(tmp_path / "two.safetensors", tensors, meta[::-1])
    assert file_sha256(tmp_path / "one.safetensors") != file_sha256(tmp_path / "two.safetensors")
    assert weights_hash(tmp_path / "one.safetensors") == weights_hash(tmp_path / "two.safetensors")
    reshaped = {"a": tensors["a"].reshape(3, 2), "b": tensors["b"]}  # same bytes, other shape
    _safetensors_with_header(tmp_path / "three.safetensors", reshaped, meta)
    assert weights_hash(tmp_path / "three.safetensors") != weights_hash(tmp_path / "one.safetensors")


SAVE = """
import sys, torch
from safetensors.torch import save_file
torch.manual_seed(0)
state = {"blocks.0.weight": torch.randn(8, 8), "cls_token": torch.randn(1, 1, 8), "pos": torch.randn(4)}
save_file(state, sys.argv[1], metadata={"format": "saip-bench-backbone", "version": "1", "arch": "vit_tiny"})
"""


def test_provenance_names_equal_weights_equally_across_processes(tmp_path):
    """Two processes save the same weights; the checkpoint info used in provenance must agree (the files'
    sha256 agree only when both happened to write the header's metadata in the same order)."""
    import subprocess
    import sys

    from saip_bench.bench.checkpoints import CheckpointCache

    paths = [tmp_path / f"w{i}.safetensors" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", SAVE, str(p)]) for p in paths]
    assert [p.wait(60) for p in procs] == [0, 0]
    cache = CheckpointCache(tmp_path / "cache")
    infos = [cache.user_checkpoint("saip", "vit_tiny", p) for p in paths]
    assert len({i.weights_hash for i in infos}) == 1 and len({i.key for i in infos}) == 1


def test_a_published_checkpoint_is_converted_once_and_named_in_provenance(tmp_path):
    """Issue 24: an MAE release (``model`` + decoder + ``args`` Namespace) given as a user checkpoint."""
    import argparse
    from pathlib import Path

    import timm
    import torch

    from saip_bench.bench.checkpoints import CheckpointCache, default_loader, weights_hash

    torch.manual_seed(5)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": {**state, "decoder_pred.weight": torch.zeros(768, 128),
                          "mask_token": torch.zeros(1, 1, 192)}, "args": argparse.Namespace(a=1)}, path)
    cache = CheckpointCache(tmp_path / "cache")
    info = cache.user_checkpoint("mae_release", "vit_tiny", path)
    assert info.source == "external" and info.external["path"] == str(path.resolve())
    assert info.external["weights_hash"] == info.weights_hash == weights_hash(path)
    assert "decoder_pred.weight" in info.external["mapping"]["dropped"]
    backbone = default_loader(Path(info.path), (256, 128))
    key = "blocks.5.mlp.fc1.weight"
    assert torch.equal(backbone.body.state_dict()[key], state[key])
    again = CheckpointCache(tmp_path / "cache").user_checkpoint("mae_release", "vit_tiny", path)
    assert again.path == info.path and again.key == info.key
