"""Data-parallel fine-tuning of one unit over every rank of a process group (issue 19, item 2).

Why a module of its own: the fit loop, the batch builders, the evaluation and the runner all ask the same
questions (how is the spec's batch split, which rank writes, how do the ranks agree on a failure), and
the answers must be the same everywhere. A ``DataParallel`` plan is made once per unit by ``Task.run``
and is active (``current()``) while that unit fits and predicts.

The batch rule: per-rank batch x world x accumulation = the spec's batch, exactly; a split that cannot
hold it is a ``UserError`` naming the spec and the numbers. Each global batch of keys (drawn from the
seed on every rank alike) is cut into ``world x accumulation`` micro-batches; rank r takes micro-batches
r, r + W, ... so the ranks together see what one process sees (``micro_batches``).

The failure rule (a rank that raises alone while the others wait in a collective hangs the run): every
step that may fail on one rank only runs under ``agreed`` or ``on_rank0``, which end with a collective
every rank reaches, and then raise on every rank when any rank failed.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from saip_bench.errors import UserError

T = TypeVar("T")
RANK_SEED_STRIDE = 7919  # rank r > 0 of a data-parallel unit draws from seed + r x this (Task.run)
_CURRENT: contextvars.ContextVar[DataParallel | None] = contextvars.ContextVar("saip_data_parallel",
                                                                                default=None)


class DataParallelFault(RuntimeError):
    """Another rank failed during a data-parallel unit; every rank stops the unit with this message."""


@dataclass(frozen=True)
class Ranks:
    """The ranks that take part in one unit together (what ``agreed`` and ``on_rank0`` need)."""

    world: int
    rank: int

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes prediction files, resume state, logs and records."""
        return self.rank == 0

    def shard_range(self, count: int, rank: int | None = None) -> tuple[int, int]:
        """This rank's (or ``rank``'s) contiguous slice of ``count`` evaluation items (rank order = item
        order); no slice is longer than ceil(count / world)."""
        bounds = np.linspace(0, count, self.world + 1).round().astype(int)
        rank = self.rank if rank is None else rank
        return int(bounds[rank]), int(bounds[rank + 1])


@dataclass(frozen=True)
class DataParallel(Ranks):
    """How one unit's spec batch is split: ``world`` ranks x ``per_rank_batch`` x ``accumulation``."""

    per_rank_batch: int
    accumulation: int
    spec_batch: int
    # whether a trainable parameter of the unit may get no gradient in a step
    # (``Task.leaves_parameters_unused``): DDP then searches the graph for them each step (``wrap``)
    unused_parameters: bool = False

    @property
    def effective_batch(self) -> int:
        return self.per_rank_batch * self.world * self.accumulation

    def summary(self) -> dict[str, int]:
        """What a record says about the split (ResultRecord provenance)."""
        return {"world_size": self.world, "per_rank_batch": self.per_rank_batch,
                "accumulation": self.accumulation, "effective_batch": self.effective_batch}

    def micro_batches(self, keys: list[Any]) -> list[list[Any]]:
        """This rank's ``accumulation`` micro-batches of one global batch of keys, in step order.

        A global batch shorter than the spec's (a task clamps its batch to a small data set) is cut as
        evenly as numpy's ``array_split`` does; one too short to give every rank a sample is an error
        (raised on every rank alike: the keys are the same everywhere)."""
        parts = self.world * self.accumulation
        if len(keys) < parts:
            raise UserError(f"a batch of {len(keys)} samples cannot feed {self.world} ranks x "
                            f"{self.accumulation} accumulation steps (the data set is smaller than the "
                            "split needs): run on fewer ranks")
        bounds = np.linspace(0, len(keys), parts + 1).round().astype(int)
        cuts = [keys[int(bounds[i]):int(bounds[i + 1])] for i in range(parts)]
        return [cuts[step * self.world + self.rank] for step in range(self.accumulation)]


def plan(spec_batch: int, world: int = 1, rank: int = 0, per_rank_batch: int | None = None,
         what: str = "the spec", unused_parameters: bool = False) -> DataParallel:
    """The split of ``spec_batch`` over ``world`` ranks (``per_rank_batch``: a cap, e.g. GPU memory; the
    rest is gradient accumulation). ``what`` names the spec field in the error; ``unused_parameters``:
    see ``DataParallel``."""
    if world < 1 or spec_batch < 1:
        raise UserError(f"{what}: batch {spec_batch} over {world} ranks: both must be >= 1")
    if per_rank_batch is None:
        if spec_batch % world:
            raise UserError(f"{what}: batch_size {spec_batch} cannot be split evenly over {world} ranks "
                            f"(per-rank batch x {world} ranks x accumulation must equal {spec_batch}); "
                            f"use a world size that divides {spec_batch}")
        return DataParallel(world, rank, spec_batch // world, 1, spec_batch, unused_parameters)
    if per_rank_batch < 1 or spec_batch % (per_rank_batch * world):
        fits = [b for b in range(1, spec_batch // world + 1) if spec_batch % (b * world) == 0]
        raise UserError(f"{what}: batch_size {spec_batch} cannot be held by {per_rank_batch} per rank x "
                        f"{world} ranks x an integer accumulation; per-rank batches that fit: "
                        f"{', '.join(map(str, fits)) or 'none (the world size does not divide the batch)'}")
    return DataParallel(world, rank, per_rank_batch, spec_batch // (per_rank_batch * world), spec_batch,
                        unused_parameters)


def current() -> DataParallel | None:
    """The plan of the unit now running (None: the ordinary single-process fit)."""
    return _CURRENT.get()


@contextlib.contextmanager
def active(dp: DataParallel | None) -> Iterator[DataParallel | None]:
    token = _CURRENT.set(dp)
    try:
        yield dp
    finally:
        _CURRENT.reset(token)


def world_of_group() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


# --- agreement: every rank reaches the same collectives, then all raise together ----------------------


def agreed(fn: Callable[[], T], what: str, dp: Ranks | None) -> T:
    """``fn()`` on every rank, then one all-gather of the outcomes: if any rank failed, every rank raises
    (the failing rank its own exception, the others a ``DataParallelFault`` naming it and its message)."""
    if dp is None or not dp.distributed:
        return fn()
    error: BaseException | None = None
    value: Any = None
    try:
        value = fn()
    except Exception as exc:  # held until every rank has reported
        error = exc
    outcomes: list[Any] = [None] * dp.world
    message = None if error is None else f"{type(error).__name__}: {error}"
    torch.distributed.all_gather_object(outcomes, message)
    _raise_if_failed(outcomes, what, error)
    return value


def same_on_every_rank(value: Any, what: str, dp: Ranks | None) -> None:
    """Stop every rank when ``value`` (read by each rank, e.g. the resume epoch from a shared file)
    differs between ranks: they would train different steps and their collectives would not pair up."""
    if dp is None or not dp.distributed:
        return
    values: list[Any] = [None] * dp.world
    torch.distributed.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise DataParallelFault(f"{what} differs between ranks: "
                                + ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values)))


def on_rank0(fn: Callable[[], T], what: str, dp: Ranks | None) -> T:
    """``fn()`` on rank 0 only (writing files, scoring them), its value or failure broadcast to all."""
    if dp is None or not dp.distributed:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if dp.rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:
            error = exc
            box[0] = ("error", f"{type(exc).__name__}: {exc}")
    torch.distributed.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        _raise_if_failed([value] + [None] * (dp.world - 1), what, error)
    return value


def _raise_if_failed(outcomes: list[str | None], what: str, own: BaseException | None) -> None:
    failing = {rank: message for rank, message in enumerate(outcomes) if message is not None}
    if not failing:
        return
    if own is not None:
        raise own
    named = "; ".join(f"rank {rank}: {message}" for rank, message in failing.items())
    raise DataParallelFault(f"{what} failed on {named} (every rank stops this unit)")


def step_outcome(failed: bool, loss: torch.Tensor | None, dp: DataParallel, description: str,
                 step: int, device: torch.device | str) -> torch.Tensor:
    """One all-gather per micro-step of [failed, loss]: every rank learns whether a rank failed to load
    or forward its micro-batch (then all stop before the gradient all-reduce, which would hang) and the
    mean loss over ranks (what a single process would log for the whole batch). Returns that mean."""
    # on the unit's device on every rank, a failed one too (NCCL gathers GPU tensors only)
    mine = torch.tensor([float(failed), 0.0 if loss is None else float(loss.detach().float())],
                        device=device)
    every = [torch.zeros_like(mine) for _ in range(dp.world)]
    torch.distributed.all_gather(every, mine)
    stacked = torch.stack(every).cpu()
    failing = [rank for rank in range(dp.world) if stacked[rank, 0] > 0]
    if failing and not failed:
        named = ", ".join(f"rank {rank}" for rank in failing)
        raise DataParallelFault(f"{description}: {named} failed at step {step} (see its message there); "
                                "every rank stops this unit")
    return stacked[:, 1].mean()


# --- the model: DDP over a forward that returns the task's loss -----------------------------------------


class LossForward(nn.Module):
    """DDP needs the forward it syncs to run through it; the tasks' losses call their backbone and head
    directly, so this module's forward is the task's loss function over ``model``'s parameters."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(batch)


def wrap(model: nn.Module, loss_fn: Callable[[Any], torch.Tensor], device: torch.device | str,
         dp: DataParallel) -> nn.Module:
    """``model`` for data-parallel training: BatchNorm -> SyncBatchNorm on GPUs (the statistics of the
    whole batch, as one process computes them; torch runs SyncBatchNorm on GPUs only, so on CPU each
    rank normalises its own share), then DDP around ``LossForward`` (gradients all-reduced, averaged).

    The conversion keeps the parameter objects, so an optimizer built before still holds them."""
    if torch.device(device).type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root (no root is a BN)
    # device_ids=None: DDP leaves the batch where the task put it (some keep indices on the host to index
    # label tables there). find_unused_parameters only for a task whose parameters may get no gradient
    # (``Task.leaves_parameters_unused``): without it such a parameter stalls the reducer; with it where
    # none is unused, DDP walks the graph every step for nothing (and torch warns)
    return nn.parallel.DistributedDataParallel(LossForward(model, loss_fn), device_ids=None,
                                               find_unused_parameters=dp.unused_parameters)


def sync_buffers(model: nn.Module, dp: DataParallel | None) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank before evaluation: without
    SyncBatchNorm each rank's last step updated them from its own share."""
    if dp is None or not dp.distributed:
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)


def gather_objects(value: Any, dp: Ranks | None) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if dp is None or not dp.distributed:
        return [value]
    values: list[Any] = [None] * dp.world
    torch.distributed.all_gather_object(values, value)
    return values


def gather_to_first(value: Any, dp: Ranks | None) -> list[Any] | None:
    """Every rank's ``value`` in rank order on rank 0 (None on the others): what rank 0 alone writes."""
    if dp is None or not dp.distributed:
        return [value]
    values: list[Any] | None = [None] * dp.world if dp.rank == 0 else None
    torch.distributed.gather_object(value, values, dst=0)
    return values


def gather_rows(local: dict[str, torch.Tensor], dp: DataParallel | None) -> dict[str, torch.Tensor]:
    """Every rank's rows (contiguous shards in rank order) concatenated on every rank: the outputs one
    process computes over all items, in the same order (ranks with no items send nothing)."""
    if dp is None or not dp.distributed:
        return local
    shards: list[Any] = [None] * dp.world
    torch.distributed.all_gather_object(shards, {k: v.cpu() for k, v in local.items()})
    keys = next((list(s) for s in shards if s), [])
    return {key: torch.cat([s[key] for s in shards if s]) for key in keys}


def predict_in_shards(count: int, predict: Callable[[int, int], list[T]], write: Callable[[list[T]], None],
                      what: str, ranks: Ranks | None, round_size: int | None = None) -> None:
    """Predict items ``0 .. count-1`` over the ranks of a data-parallel unit and write them once.

    Why one helper: every task that shards its prediction needs the same skeleton, and each copy must
    keep the same collectives on every rank. Each rank predicts its contiguous share (``shard_range``),
    ``round_size`` items a round (None: the whole share in one round, so ``write`` sees every item in
    item order, as one file such as a results JSON needs), by ``predict(start, stop)`` -> a list; each
    round's lists are gathered to the writer rank in rank order and ``write(items)`` runs there alone.
    A failure in ``predict`` on any rank or in ``write`` on the writer stops every rank with the failing
    rank named (``agreed`` / ``on_rank0``). Without ``ranks`` (one process, or a task whose prediction
    runs on rank 0 only) it is ``write(predict(0, count))`` round by round."""
    group = ranks if ranks is not None and ranks.distributed else Ranks(1, 0)
    first, stop = group.shard_range(count)
    longest = max(b - a for a, b in (group.shard_range(count, r) for r in range(group.world)))
    step = round_size or max(longest, 1)
    rounds = max(1, -(-longest // step))  # the same count on every rank: the collectives pair up
    for round_ in range(rounds):
        start = min(stop, first + round_ * step)
        end = min(stop, start + step)
        mine = agreed(lambda a=start, b=end: predict(a, b) if a < b else [], what, group)
        every = gather_to_first(mine, group)
        items = [item for share in every for item in share] if every is not None else []
        on_rank0(lambda i=items: write(i), f"{what}: writing", group)
