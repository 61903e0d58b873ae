"""Count, on a CPU, what would stop a GPU's host each training step: reads of tensor values, data-dependent
shapes and small host-to-device copies.

Why: on a GPU the host queues kernels ahead of the device; every read of a device value (``.item()``,
``bool(t)``, ``float(t)``, ``.tolist()``, ``.cpu()``), every op whose output shape depends on values
(``nonzero``, ``x[mask]``, ``unique``, ...) and every blocking copy to the device waits until the device
has caught up, so the launch gaps of a small model (a ViT-Tiny step is mostly fixed cost) are paid in full.
None of it shows in CPU timings, but all of it can be counted on a CPU, so tests can hold the line.

How: while ``SyncCounter.tracking()`` is active, a dispatch mode sees every aten op (forward, backward,
optimiser) and a function mode sees the Python calls that move data (``.to``, ``.cpu``, ``torch.tensor(...,
device=)``). Each tensor gets a placement: *device* (declared with ``mark_device``: parameters, buffers,
optimiser state; created by a Python call with ``device=`` a device; moved with ``.to(device)``; or the
output of an op with a device input) or *host* (a Python factory call without a device:
``torch.tensor(list)``, ``torch.arange(n)``, ``torch.from_numpy``; or an op on host tensors only).
Tensors that existed before tracking and were never declared, and tensors that kernels create for
themselves (``zeros(size, grad.options())`` in a backward), are *unknown* and count as neither.
Inside ``counting()``:

- host reads: ``aten::_local_scalar_dense`` on a device tensor (``.item()``, ``bool``, ``float``, ``int``,
  python ``if``), ``.cpu()``, ``.numpy()``, ``.tolist()``, ``.to("cpu")`` of a device tensor;
- data-dependent ops with a device input: ``nonzero`` (also ``torch.where(cond)``, ``argwhere``),
  ``masked_select``, ``unique`` (all variants), ``index`` / ``index_put_`` with a boolean mask (forward
  and backward), ``repeat_interleave`` without ``output_size``, ``bincount``, ``equal``;
- small H2D copies: a host tensor created inside the region that reaches the device, explicitly
  (``.to(device)``, ``.cuda()``, ``torch.tensor(data, device=)``, ``torch.as_tensor``, ``new_tensor``) or
  implicitly (a host index tensor or Python list indexing a device tensor, ``device.copy_(host)``);
  blocking ones (``small_h2d``) wait for the device, ``non_blocking=True`` ones are counted apart
  (``async_h2d``: queued, no stall when the source is pinned, as ``devices.host_to_device`` makes it);
- blocking batch copies: host tensors built before the region (the loader's batch) moved without
  ``non_blocking=True`` (from pinned memory such a copy still waits for the device to drain).

On a CPU run the device *is* the CPU, so where a call names a device the counter reads where the name
came from: a ``torch.device`` object (``ctx.device``, the ``.device`` of a device tensor) is the
accelerator; the string ``"cpu"`` and the ``.device`` of a host tensor are the host (so
``torch.tensor(0.0, device="cpu")`` in torch's optimisers stays on the host). Not counted: reads inside
C++ kernels that the dispatcher does not see (e.g. ``masked_fill`` with a tensor value), reads only a CPU
makes (``one_hot``'s range checks when ``num_classes`` is given: CUDA checks by a device assert),
whether a non-blocking copy's source really is pinned, and anything the DataLoader's workers do. Events
carry the innermost source line outside torch and the copy helpers (``SyncCounts.sites``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from saip_bench.devices import tensors_in

DEVICE, HOST = "device", "host"
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS_FILE = os.path.abspath(__file__)
# copy helpers: an event inside them is reported at their caller
_HELPERS = frozenset({_THIS_FILE, os.path.join(os.path.dirname(os.path.dirname(_THIS_FILE)), "devices.py")})
_STDLIB_DIR = os.path.dirname(contextlib.__file__) + os.sep

aten = torch.ops.aten
READ_OPS = frozenset({aten._local_scalar_dense.default})
DATA_DEPENDENT_OPS = frozenset({
    aten.nonzero.default, aten.masked_select.default, aten._unique.default, aten._unique2.default,
    aten.unique_dim.default, aten.unique_consecutive.default, aten.unique_dim_consecutive.default,
    aten.bincount.default, aten.equal.default,
})
MASK_INDEX_OPS = frozenset({aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
                            aten._index_put_impl_.default})
REPEAT_INTERLEAVE = frozenset({aten.repeat_interleave.Tensor, aten.repeat_interleave.self_Tensor})
HOST_FACTORIES = frozenset({aten.lift_fresh.default, aten.lift_fresh_copy.default})  # torch.tensor(data)
_DEVICE_GETTER = torch.Tensor.device  # the ``.device`` property's descriptor
DATA_COPIES = frozenset({"tensor", "as_tensor", "asarray", "new_tensor"})  # host data -> a new tensor


@dataclass
class SyncCounts:
    """What one ``counting()`` region did, by kind; each counter is keyed by the op or call that did it."""

    reads: Counter[str] = field(default_factory=Counter)
    data_dependent: Counter[str] = field(default_factory=Counter)
    small_h2d: Counter[str] = field(default_factory=Counter)  # blocking copies of host tensors built here
    async_h2d: Counter[str] = field(default_factory=Counter)  # non-blocking ones (no stall when pinned)
    batch_h2d: Counter[str] = field(default_factory=Counter)  # blocking copies of the pre-built batch
    sites: Counter[str] = field(default_factory=Counter)  # "kind what: file:line" of every event

    def totals(self) -> dict[str, int]:
        return {"reads": sum(self.reads.values()), "data_dependent": sum(self.data_dependent.values()),
                "small_h2d": sum(self.small_h2d.values()), "async_h2d": sum(self.async_h2d.values()),
                "batch_h2d": sum(self.batch_h2d.values())}


def is_caller_code(filename: str, also_skip: frozenset[str] = frozenset()) -> bool:
    """Whether a frame's file is the code an event is reported at: not torch, the standard library, this
    file, the copy helpers or the files in ``also_skip`` (absolute paths: another profiling mode's own)."""
    name = os.path.abspath(filename)
    return not (name.startswith(_TORCH_DIR) or name.startswith(_STDLIB_DIR) or name in _HELPERS
                or name in also_skip or filename.startswith("<"))


def source_site(also_skip: frozenset[str] = frozenset()) -> str:
    """The innermost calling line that ``is_caller_code``."""
    frame = sys._getframe(1)
    while frame is not None:
        if is_caller_code(frame.f_code.co_filename, also_skip):
            return f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class SyncCounter:
    """Placement tracking (``tracking()``) and event counting (``counting()``), see the module docstring.

    Placements are keyed by the tensor's C++ object and hold a weak reference to its Python object. A
    tensor whose Python object died while C++ kept it (one saved for backward) keeps its placement when
    its data pointer still matches; a 0-d tensor does not (a Python number that an op wraps into a 0-d
    tensor, outside the dispatcher, would otherwise inherit the placement of a dead one at the same
    addresses: such reuse is common for 0-d tensors and counted reads that never happened).
    """

    def __init__(self) -> None:
        # cdata -> (placement, region, data_ptr, weak reference to the Python object)
        self._placement: dict[int, tuple[str, int, int, weakref.ref]] = {}
        self._region = 0  # id of the current counting region (0: none)
        self._regions = 0  # regions opened so far
        # ``.device`` objects read from host tensors (kept alive, so their ids stay theirs): a device taken
        # from a host tensor names the host, whatever its spelling
        self._host_devices: dict[int, torch.device] = {}
        self._cpu_checks = 0  # inside a call whose reads only a CPU makes (one_hot's range checks)
        self.counts: SyncCounts | None = None

    # ---- placements
    def _get(self, tensor: torch.Tensor) -> tuple[str | None, bool]:
        """(placement or None when unknown, created in the current counting region)."""
        entry = self._placement.get(tensor._cdata)
        if entry is None or entry[2] != _data_ptr(tensor):
            return None, False
        alive = entry[3]()
        if alive is not tensor and (alive is not None or tensor.ndim == 0):
            return None, False
        return entry[0], self._region != 0 and entry[1] == self._region

    def _is_device(self, device: Any) -> bool:
        """Whether a ``device=`` argument means the accelerator: a device object (``ctx.device``, the
        ``.device`` of a device tensor) does; the string ``"cpu"`` (code that means the host, as torch's
        optimisers) and the ``.device`` of a host tensor do not."""
        if isinstance(device, str):
            return torch.device(device).type != "cpu"
        return self._host_devices.get(id(device)) is not device

    def _set(self, tensor: torch.Tensor, placement: str) -> None:
        self._placement[tensor._cdata] = (placement, self._region, _data_ptr(tensor), weakref.ref(tensor))

    def mark_device(self, *values: Any) -> None:
        """Declare tensors (or modules' parameters, gradients, buffers; optimisers' states; nested
        containers) as living on the device."""
        for value in values:
            if isinstance(value, nn.Module):
                for tensor in [*value.parameters(), *value.buffers()]:
                    self._set(tensor, DEVICE)
                    if tensor.grad is not None:
                        self._set(tensor.grad, DEVICE)
            elif isinstance(value, torch.optim.Optimizer):
                for state in value.state.values():
                    self.mark_device(*[t for t in state.values() if isinstance(t, torch.Tensor) and t.ndim])
            else:
                for tensor in tensors_in(value):
                    self._set(tensor, DEVICE)

    # ---- events
    def _record(self, kind: str, what: str) -> None:
        if self.counts is None:
            return
        getattr(self.counts, kind)[what] += 1
        self.counts.sites[f"{kind} {what}: {source_site()}"] += 1

    def _copy_to_device(self, source: torch.Tensor, what: str, non_blocking: bool) -> None:
        placement, fresh = self._get(source)
        if placement != HOST:
            return
        if fresh:
            self._record("async_h2d" if non_blocking else "small_h2d", what)
        elif not non_blocking:
            self._record("batch_h2d", what)

    # ---- regions
    @contextlib.contextmanager
    def tracking(self) -> Iterator[SyncCounter]:
        """Follow placements (no counting yet): wrap everything from the set-up of the modules on."""
        with _FunctionMode(self), _DispatchMode(self):
            yield self

    @contextlib.contextmanager
    def counting(self) -> Iterator[SyncCounts]:
        """Count the events of the region (inside ``tracking()``); yields the counts, filled on exit."""
        counts = SyncCounts()
        self.counts = counts
        self._regions += 1
        self._region = self._regions
        try:
            yield counts
        finally:
            self.counts = None
            self._region = 0


def _data_ptr(tensor: torch.Tensor) -> int:
    try:
        return tensor.data_ptr()
    except RuntimeError:  # storage-less tensors (none in our steps)
        return -1


class _DispatchMode(TorchDispatchMode):
    """Every aten op: reads, data-dependent ops, implicit host-to-device moves, output placements."""

    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        counter = self.counter
        inputs = list(tensors_in((args, kwargs)))
        placements = [counter._get(t) for t in inputs]
        on_device = any(p == DEVICE for p, _ in placements)
        if counter.counts is not None and on_device:
            name = str(func.overloadpacket.__name__)
            if func in READ_OPS:
                if not counter._cpu_checks:
                    counter._record("reads", name)
            elif func in DATA_DEPENDENT_OPS:
                counter._record("data_dependent", name)
            elif func in MASK_INDEX_OPS and any(
                t is not None and t.dtype in (torch.bool, torch.uint8) for t in tensors_in(args[1])
            ):
                counter._record("data_dependent", f"{name}[mask]")
            elif func in REPEAT_INTERLEAVE and kwargs.get("output_size") is None:
                counter._record("data_dependent", name)
            for tensor, (placement, fresh) in zip(inputs, placements, strict=True):
                if placement == HOST and tensor.ndim > 0:  # a GPU copies it (index, copy_) or refuses
                    counter._record("small_h2d" if fresh else "batch_h2d", f"{name} (implicit)")
        out = func(*args, **kwargs)
        # an op without tensor inputs (a factory inside a kernel or backward: ``zeros(size, grad.options())``)
        # stays unknown here; a Python factory call is placed by the function mode from its ``device=``
        if on_device:
            placement: str | None = DEVICE
        elif func in HOST_FACTORIES or any(p == HOST for p, _ in placements):
            placement = HOST
        else:
            placement = None
        if placement is not None:
            for tensor in tensors_in(out):
                counter._set(tensor, placement)
        return out


class _FunctionMode(TorchFunctionMode):
    """Python-level calls that the dispatcher cannot tell apart on a CPU: moves, reads, ``device=``."""

    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        counter = self.counter
        name = getattr(func, "__name__", "")
        if name in ("cpu", "numpy", "tolist", "__array__") and args and isinstance(args[0], torch.Tensor):
            source = args[0]
            if counter._get(source)[0] == DEVICE:
                counter._record("reads", name)
            out = func(*args, **kwargs)
            if name == "cpu" and isinstance(out, torch.Tensor):
                out = out.view_as(out) if out is source else out  # a host alias; the source stays put
                counter._set(out, HOST)
            return out
        if name in ("to", "cuda") and args and isinstance(args[0], torch.Tensor):
            return self._move(func, name, args, kwargs)
        if name == "one_hot" and (args[1] if len(args) > 1 else kwargs.get("num_classes", -1)) != -1:
            # with num_classes given, CUDA checks the classes by a device assert; only a CPU reads them
            counter._cpu_checks += 1
            try:
                return func(*args, **kwargs)
            finally:
                counter._cpu_checks -= 1
        out = func(*args, **kwargs)
        if getattr(func, "__self__", None) is _DEVICE_GETTER:
            if counter._get(args[0])[0] == HOST:
                counter._host_devices[id(out)] = out
            return out
        device = kwargs.get("device")
        if name in DATA_COPIES:
            data = args[1] if name == "new_tensor" else (args[0] if args else kwargs.get("data"))
            target = counter._is_device(device) if device is not None else (
                name == "new_tensor" and counter._get(args[0])[0] == DEVICE)
            if target:
                if isinstance(data, torch.Tensor):
                    counter._copy_to_device(data, name, bool(kwargs.get("non_blocking", False)))
                else:
                    counter._record("small_h2d", name)
                for tensor in tensors_in(out):
                    counter._set(tensor, DEVICE)
            elif not isinstance(data, torch.Tensor):
                for tensor in tensors_in(out):
                    counter._set(tensor, HOST)
            return out
        if device is not None or not any(True for _ in tensors_in((args, kwargs))):
            # a factory call: on the device it names, on the host without one
            placement = DEVICE if device is not None and counter._is_device(device) else HOST
            for tensor in tensors_in(out):
                counter._set(tensor, placement)
        return out

    def _move(self, func: Any, name: str, args: tuple, kwargs: dict) -> Any:
        counter = self.counter
        source = args[0]
        placement, _ = counter._get(source)
        non_blocking = bool(kwargs.get("non_blocking", False))
        target: str | None = DEVICE
        if name == "to":
            other = next((a for a in args[1:] if isinstance(a, torch.Tensor)), kwargs.get("other"))
            named = (a for a in args[1:] if isinstance(a, (str, torch.device)))
            device = kwargs.get("device", next(named, None))
            non_blocking = bool(torch._C._nn._parse_to(*args[1:], **kwargs)[2])
            if isinstance(other, torch.Tensor):
                target = counter._get(other)[0]
            elif device is None:
                target = None  # a dtype change: the dispatcher follows it
            elif not counter._is_device(device):
                target = HOST
        if target == DEVICE and placement == HOST:
            counter._copy_to_device(source, name, non_blocking)
        elif target == HOST and placement == DEVICE:
            counter._record("reads", "to('cpu')")
        out = func(*args, **kwargs)
        if target is not None and target != placement and isinstance(out, torch.Tensor):
            if out is source and placement is not None:
                out = out.view_as(out)  # the moved copy; the original keeps its placement
            counter._set(out, target)
        return out


COLUMNS = (("reads", "host reads"), ("data_dependent", "data-dep ops"), ("small_h2d", "blocking H2D"),
           ("async_h2d", "async H2D"), ("batch_h2d", "blocking batch H2D"))


def format_table(rows: Iterable[tuple[str, dict[str, float]]]) -> str:
    """A plain-text table of per-step totals, one row per step kind (``SyncCounts.totals``)."""
    header = f"{'step':<22}" + "".join(f"{title:>20}" for _, title in COLUMNS)
    lines = [header, "-" * len(header)]
    for name, totals in rows:
        lines.append(f"{name:<22}" + "".join(f"{totals[key]:>20g}" for key, _ in COLUMNS))
    return "\n".join(lines)
