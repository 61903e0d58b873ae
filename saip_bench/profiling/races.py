"""Find, on any CPU, the ops whose multi-threaded CPU kernels make same-seed runs differ.

Why: "the same seed on CPU gives the same numbers" held on one thread but not on two for Fashionpedia's
fine-tune (two runs differed from step 2). The cause was PyTorch's CPU ``index_put_`` with
``accumulate=True``, the backward of indexing a tensor with repeated indices (``context[per_image]``):
on float32, with more than one thread and at least ``GRAIN_SIZE`` elements, its kernel adds with atomic
float additions in whatever order the threads reach them (``put_`` with ``accumulate=True`` does the same);
with repeated indices that order changes the sum's rounding. At test sizes the kernel runs serially, so a
run-twice-and-compare test rarely sees it; this mode flags the op itself, at any size: an accumulating
``index_put`` / ``put_`` on float32 whose indices repeat. Distinct indices are exact (each slot gets one
addition) and are not flagged. ``torch.use_deterministic_algorithms`` would make the kernel serial instead,
process-wide; we keep the steps free of the op instead (expanding each row where it repeats is ordered).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from saip_bench.profiling.syncs import is_caller_code, source_site

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_THIS_FILE = frozenset({os.path.abspath(__file__)})

aten = torch.ops.aten
INDEX_PUT_OPS = frozenset({aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default})
PUT_OPS = frozenset({aten.put_.default, aten.put.default})


def _repeats(indices: list[torch.Tensor | None]) -> bool:
    """Whether the advanced indices (``None`` = a whole dimension) address one element more than once."""
    tensors = [t for t in indices if t is not None]
    if not tensors or any(t.dtype in (torch.bool, torch.uint8) for t in tensors):
        return False  # a mask addresses each element at most once
    rows = torch.stack([t.long() for t in torch.broadcast_tensors(*tensors)]).flatten(1)
    return torch.unique(rows, dim=1).shape[1] < rows.shape[1]


def op_site() -> str:
    """Where the op came from: in a backward, the forward line that made its graph node (anomaly mode's
    record of it) after the node's name; otherwise the innermost calling line outside torch."""
    node = torch._C._current_autograd_node()
    if node is None:
        return source_site(_THIS_FILE)
    frames = [m for m in _FRAME.finditer("".join(node.metadata.get("traceback_", [])))
              if is_caller_code(m["file"], _THIS_FILE)]
    if not frames:
        return f"{node.name()} of {source_site(_THIS_FILE)}"
    return f"{node.name()} of {os.path.relpath(frames[-1]['file'])}:{frames[-1]['line']}"


class AccumulationRaces(TorchDispatchMode):
    """Counts, by source line, the float32 accumulating ``index_put`` / ``put_`` with repeated indices
    (forward and backward) run while the mode is active; ``found`` maps "op: file:line" to a count."""

    def __init__(self) -> None:
        super().__init__()
        self.found: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in INDEX_PUT_OPS or func in PUT_OPS:
            target = args[0]
            accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
            if accumulate and target.dtype == torch.float32:
                index = args[1]
                repeated = _repeats(list(index)) if func in INDEX_PUT_OPS else _repeats([index])
                if repeated:
                    self.found[f"{func.overloadpacket.__name__}: {op_site()}"] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def accumulation_races() -> Iterator[Counter[str]]:
    """Run the block under ``AccumulationRaces``; yields its ``found`` counter (filled as ops run). Autograd's
    anomaly mode is on in the block (slower), so a flagged backward op names the forward line behind it."""
    mode = AccumulationRaces()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Anomaly Detection has been enabled")
        anomaly = torch.autograd.detect_anomaly(check_nan=False)
        anomaly.__enter__()
    try:
        with mode:
            yield mode.found
    finally:
        anomaly.__exit__(None, None, None)
