"""Small shared helpers: seeding, atomic writes, autocast, thread settings, the rich console."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

if TYPE_CHECKING:  # torch is imported where it is used: `saip-bench --help` does not pay for it
    import torch

console = Console(stderr=True)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a torch Generator for explicit randomness."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temp file next to ``path`` with the user's umask mode (``mkstemp`` alone makes it 0600, so shared
    result folders and web servers could not read records, boards or checkpoints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, umask_mode())
    return fd, tmp


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """A handle on a temp file in the same folder; on a clean exit fsync, then rename over ``path``, on any
    error remove it: readers never see half a file, and a failed write leaves the old file. For files
    written piece by piece (streamed), where ``atomic_write_bytes`` would need the whole content at once."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    import torch

    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@functools.cache
def bf16_is_fast(device_type: str) -> bool:
    """Whether bf16 autocast runs on native bf16 units of this device.

    Why: on a CPU without AVX512-BF16/AMX, oneDNN emulates bf16 and a ViT-Tiny training step at 128x64
    runs ~16x *slower* than fp32 (benchmarks/amp_speed.py); with those units it is 1.3-1.9x faster.
    """
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_amp(requested: bool, device: str | torch.device) -> bool:
    """The AMP setting a run actually uses: the request, unless the device would emulate bf16.

    ``SAIP_AMP=force`` keeps the request on any device (e.g. to measure the emulated path).
    """
    if not requested:
        return False
    if os.environ.get("SAIP_AMP", "").lower() == "force":
        return True
    import torch

    return bf16_is_fast(torch.device(device).type)


def autocast(device: str | torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA; a no-op when disabled. Callers pass ``resolve_amp``'s answer."""
    import torch

    device_type = torch.device(device).type
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def file_sha256(path: str | Path, length: int = 16) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
