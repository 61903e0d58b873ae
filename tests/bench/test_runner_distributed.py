"""``run_bench`` under a 2-rank process group (gloo, CPU): every checkpoint is pretrained once by both
ranks together, every unit runs exactly once on one rank, every record is written, the report on rank 0
lists them all."""

from __future__ import annotations

import json
import os

import torch.distributed as dist

from saip_bench.bench.runner import BenchConfig, BenchHooks, run_bench
from saip_bench.bench.store import load_records
from tests.bench.fakes import FAKE_SPECS, FakePretrainer, FakeTask, fake_loader, fake_read, fake_world
from tests.bench.test_runner import PRESET
from tests.ranks import free_port, leave_group, run_ranks


def _rank(rank: int, port: int, tmp: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    FakeTask.calls, FakeTask.fail_on = [], set()
    pretrainer = FakePretrainer()
    hooks = BenchHooks(specs=FAKE_SPECS, get_task=lambda name: FakeTask(), read_dataset=fake_read,
                       generate_world=fake_world, pretrainer=pretrainer, backbone_loader=fake_loader,
                       method_unsupported=lambda m, b: None)
    config = BenchConfig(preset=PRESET, run_dir=f"{tmp}/run", cache_dir=f"{tmp}/cache", show_progress=False)
    report = run_bench(config, hooks)
    with open(f"{tmp}/rank{rank}.json", "w") as handle:
        json.dump({"units": FakeTask.calls, "pretrained": pretrainer.calls, "written": len(report.written),
                   "failed": len(report.failed)}, handle)
    leave_group()


def test_two_ranks_split_the_units_and_share_the_pretraining(tmp_path):
    run_ranks(_rank, args=(free_port(), str(tmp_path)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["units"] and ranks[1]["units"]  # both ranks worked
    assert len(ranks[0]["units"]) + len(ranks[1]["units"]) == 12  # 12 units, none twice
    assert ranks[0]["pretrained"] == ranks[1]["pretrained"]  # each checkpoint trained by both together
    assert len(ranks[0]["pretrained"]) == 2
    assert ranks[0]["written"] == 12 and ranks[0]["failed"] == 0  # rank 0's report covers both ranks
    records = load_records([tmp_path / "run"])
    assert len(records) == 12 and len({r.identity.model_dump_json() for r in records}) == 12
    assert {r.provenance["world_size"] for r in records} == {1}
    assert {r.provenance["launch_world_size"] for r in records} == {2}


class TogetherTask(FakeTask):
    """A fake fine-tune that, when run data-parallel, meets the other rank in a collective (so the test
    hangs, and fails by timeout, unless both ranks run the unit together) and reports the split."""

    def run(self, ctx):
        import torch

        result = super().run(ctx)
        if ctx.data_parallel:
            total = torch.ones(1)
            dist.all_reduce(total)  # both ranks are inside this unit at once
            result.extra.update({"world_size": int(total.item()), "per_rank_batch": 4, "accumulation": 1,
                                 "effective_batch": 8})
        return result


def _together_rank(rank: int, port: int, tmp: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    FakeTask.calls, FakeTask.fail_on = [], {"pa100k"}  # one data-parallel unit fails on both ranks
    hooks = BenchHooks(specs=FAKE_SPECS, get_task=lambda name: TogetherTask(), read_dataset=fake_read,
                       generate_world=fake_world, pretrainer=FakePretrainer(), backbone_loader=fake_loader,
                       method_unsupported=lambda m, b: None)
    preset = PRESET.model_copy(update={"protocol": "finetune"})
    config = BenchConfig(preset=preset, run_dir=f"{tmp}/run", cache_dir=f"{tmp}/cache", show_progress=False,
                         unit_parallel="data")
    report = run_bench(config, hooks)
    with open(f"{tmp}/rank{rank}.json", "w") as handle:
        json.dump({"units": FakeTask.calls, "written": len(report.written), "failed": sorted(report.failed)},
                  handle)
    leave_group()


def test_data_parallel_units_run_on_every_rank_together_and_are_recorded_once(tmp_path, capsys):
    run_ranks(_together_rank, args=(free_port(), str(tmp_path)), timeout_s=120)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(ranks[0]["units"]) == sorted(ranks[1]["units"])  # every unit on both ranks
    assert len(ranks[0]["units"]) == 12  # --unit-parallel data: all 12 finetune units together
    assert ranks[0]["written"] == 8 and len(ranks[0]["failed"]) == 4  # 4 pa100k units failed everywhere
    assert ranks[1]["failed"] == ranks[0]["failed"]
    records = load_records([tmp_path / "run"])
    assert len(records) == 8 and {r.provenance["world_size"] for r in records} == {2}
    assert {(r.provenance["per_rank_batch"], r.provenance["effective_batch"]) for r in records} == {(4, 8)}
