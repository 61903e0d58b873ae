"""``--cfg-options`` in the runner: applied before any work, part of the unit key and the record identity,
recorded in provenance; resume reruns overridden units and never mixes them with the spec's own."""

import pytest

from saip_bench.bench.presets import BenchPreset
from saip_bench.bench.runner import BenchConfig, BenchHooks, BenchRunner, run_bench
from saip_bench.bench.store import load_records
from saip_bench.errors import UserError
from tests.bench.fakes import FAKE_SPECS, FakePretrainer, FakeTask, fake_loader, fake_read, fake_world

PRESET = BenchPreset.model_validate(
    {"name": "fake", "methods": ["saip"], "backbones": ["tiny"], "seeds": [0], "synth_preset": "tiny",
     "protocol": "linear"}
)
LR = "protocols.linear.schedule.lr=1e-4"


@pytest.fixture
def env(tmp_path):
    FakeTask.calls = []
    FakeTask.fail_on = set()
    pretrainer = FakePretrainer()
    hooks = BenchHooks(specs=FAKE_SPECS, get_task=lambda name: FakeTask(), read_dataset=fake_read,
                       generate_world=fake_world, pretrainer=pretrainer, backbone_loader=fake_loader,
                       method_unsupported=lambda m, b: None)
    return hooks, pretrainer, tmp_path


def config(tmp_path, *options: str) -> BenchConfig:
    return BenchConfig(preset=PRESET, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                       show_progress=False, cfg_options=options)


def test_an_override_changes_the_unit_key_and_identity_and_is_recorded(env):
    hooks, _, tmp = env
    plain = BenchRunner(config(tmp), hooks)
    changed = BenchRunner(config(tmp, LR), hooks)
    unit, = [u for u in plain.units() if u.dataset == "market1501"]
    over, = [u for u in changed.units() if u.dataset == "market1501"]
    assert over.variant and over.protocol == "linear" and over.uid != unit.uid
    assert over.identity()["protocol"] == f"linear+cfg-{over.variant}"
    assert changed.unit_key(over) != plain.unit_key(unit)
    assert hooks.specs is FAKE_SPECS  # the caller's hooks and specs are not mutated

    report = run_bench(config(tmp, LR), hooks)
    assert report.ok
    record = next(r for r in load_records([tmp / "run"]) if r.identity.dataset == "market1501")
    assert record.provenance["cfg_options"] == ["protocols.linear.schedule.lr=0.0001"]
    assert record.identity.protocol == over.identity()["protocol"]
    assert record.provenance["unit_key"] == changed.unit_key(over)


def test_resume_reruns_overridden_units_and_keeps_the_plain_records(env):
    hooks, _, tmp = env
    run_bench(config(tmp), hooks)
    assert len(FakeTask.calls) == 3
    FakeTask.calls = []
    run_bench(config(tmp, LR), hooks)
    assert len(FakeTask.calls) == 3  # every unit again: the override reaches each spec's linear protocol
    FakeTask.calls = []
    run_bench(config(tmp, LR), hooks)
    assert FakeTask.calls == []  # same override: resumed
    run_bench(config(tmp, "protocols.linear.schedule.lr=2e-4"), hooks)
    assert len(FakeTask.calls) == 3  # another override: its own records
    records = load_records([tmp / "run"])
    assert len(records) == 9 and len({r.identity.protocol for r in records}) == 3


def test_a_scoped_override_applies_to_one_dataset_only(env):
    hooks, _, tmp = env
    run_bench(config(tmp), hooks)
    FakeTask.calls = []
    run_bench(config(tmp, "reid/market1501:input_size=[64,32]"), hooks)
    assert FakeTask.calls == ["market1501"]
    by_dataset = {}
    for record in load_records([tmp / "run"]):
        by_dataset.setdefault(record.identity.dataset, []).append(record)
    assert len(by_dataset["market1501"]) == 2 and len(by_dataset["pa100k"]) == 1
    assert by_dataset["pa100k"][0].provenance["cfg_options"] == []
    assert any(r.provenance["cfg_options"] == ["input_size=[64,32]"] for r in by_dataset["market1501"])


def test_a_bad_override_stops_before_any_work(env):
    hooks, pretrainer, tmp = env
    with pytest.raises(UserError, match=r"schedule\.lrr: unknown key") as info:
        run_bench(config(tmp, "protocols.linear.schedule.lrr=1"), hooks)
    assert "market1501.yaml" in str(info.value)
    with pytest.raises(UserError, match=r"epochs: Input should be a valid number"):
        run_bench(config(tmp, "protocols.linear.schedule.epochs=many"), hooks)
    assert pretrainer.calls == [] and FakeTask.calls == [] and not (tmp / "run").exists()
