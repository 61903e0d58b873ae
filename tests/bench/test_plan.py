import pytest
from hypothesis import given
from hypothesis import strategies as st

from saip_bench.bench.plan import Unit, filter_units, parse_shard, plan_units, select_protocol, shard_units
from saip_bench.bench.presets import BenchPreset
from saip_bench.errors import SpecError, UserError
from tests.bench.fakes import FAKE_SPECS, make_spec


def preset(**kw) -> BenchPreset:
    base = {"name": "t", "methods": ["saip", "mae"], "backbones": ["vit_tiny"], "seeds": [0, 1]}
    return BenchPreset.model_validate({**base, **kw})


def test_plan_is_full_product_grouped_by_checkpoint():
    units = plan_units(preset(), FAKE_SPECS)
    assert len(units) == 2 * 1 * 2 * 3
    assert len({u.uid for u in units}) == len(units)
    # units of one (method, backbone) are contiguous, so a checkpoint is loaded back to back
    methods = [u.method for u in units]
    assert methods == sorted(methods, key=["saip", "mae"].index)
    assert all(u.protocol == "linear" for u in units)  # fast track


def test_select_protocol_tracks():
    spec = make_spec("reid", "market1501")
    assert select_protocol(spec, "fast") == "linear"
    assert select_protocol(spec, "paper") == "finetune"
    assert select_protocol(spec, "default") == "finetune"
    assert select_protocol(spec, "linear") == "linear"
    with pytest.raises(SpecError, match="no protocol 'frozen'"):
        select_protocol(spec, "frozen")


def test_tasks_subset_and_unknown_pair():
    units = plan_units(preset(tasks=["reid/market1501"]), FAKE_SPECS)
    assert {u.dataset for u in units} == {"market1501"}
    with pytest.raises(SpecError, match="unknown task/dataset"):
        plan_units(preset(tasks=["reid/msmt17"]), FAKE_SPECS)


def test_filters_narrow_and_reject_unknown():
    units = plan_units(preset(), FAKE_SPECS)
    assert {u.method for u in filter_units(units, methods=["mae"])} == {"mae"}
    assert {u.dataset for u in filter_units(units, tasks=["detection"])} == {"crowdhuman"}
    assert {u.seed for u in filter_units(units, seeds=[1])} == {1}
    with pytest.raises(UserError, match="not in the plan"):
        filter_units(units, methods=["dino"])
    with pytest.raises(UserError, match="match no unit"):
        filter_units(units, tasks=["pose"])


@pytest.mark.parametrize("text,expected", [("1/4", (1, 4)), (" 3 / 3 ", (3, 3))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "1"])
def test_parse_shard_rejects(text):
    with pytest.raises(UserError):
        parse_shard(text)


@given(n_units=st.integers(0, 60), count=st.integers(1, 9))
def test_shards_partition_every_unit_once(n_units, count):
    units = [Unit("m", "b", "t", f"d{i}", "p", 0) for i in range(n_units)]
    shards = [shard_units(units, i, count) for i in range(1, count + 1)]
    flat = [u for shard in shards for u in shard]
    assert sorted(flat) == sorted(units) and len(flat) == len(set(flat))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
