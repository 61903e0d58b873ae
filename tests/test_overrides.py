"""``--cfg-options`` parsing and application to specs (saip_bench/overrides.py)."""

import pytest

from saip_bench.errors import UserError
from saip_bench.overrides import apply_to_specs, nested, parse_override, parse_overrides, variant
from tests.bench.fakes import FAKE_SPECS


@pytest.mark.parametrize(
    "item,path,value",
    [
        ("a.b=1", ("a", "b"), 1),
        ("protocols.finetune.schedule.lr=1e-4", ("protocols", "finetune", "schedule", "lr"), 1e-4),
        ("input_size=[256,128]", ("input_size",), [256, 128]),
        ("input_size=[256, 128]", ("input_size",), [256, 128]),
        ("optimizer=adam", ("optimizer",), "adam"),
        ("name='quoted text'", ("name",), "quoted text"),
        ("final_norm=true", ("final_norm",), True),
        ("grad_clip=null", ("grad_clip",), None),
        ("epochs=5", ("epochs",), 5),
        ('colour={"jitter_p": 0}', ("colour",), {"jitter_p": 0}),
    ],
)
def test_values_are_yaml_scalars_and_lists(item, path, value):
    parsed = parse_override(item)
    assert parsed.path == path and parsed.value == value and type(parsed.value) is type(value)
    assert parsed.scope is None


def test_a_scope_prefix_names_the_spec():
    parsed = parse_override("reid/market1501:protocols.linear.schedule.epochs=2")
    assert parsed.scope == "reid/market1501" and parsed.key == "protocols.linear.schedule.epochs"
    assert parsed.value == 2


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1", "a b=1"])
def test_malformed_items_are_one_clear_error(item):
    with pytest.raises(UserError, match="--cfg-options.*expected"):
        parse_override(item)


def test_nested_builds_mappings_and_rejects_a_value_that_is_also_a_group():
    assert nested(parse_overrides(["a.b=1", "a.c=x", "d=2"])) == {"a": {"b": 1, "c": "x"}, "d": 2}
    with pytest.raises(UserError, match="both as a value and as a group"):
        nested(parse_overrides(["a=1", "a.b=2"]))


def test_override_is_applied_and_revalidated():
    items = parse_overrides(["protocols.finetune.schedule.lr=1e-4", "protocols.finetune.schedule.epochs=5",
                             "input_size=[256,128]"])
    specs, applied = apply_to_specs(FAKE_SPECS, items, ["reid/market1501"])
    spec = specs["reid/market1501"]
    assert spec.protocols["finetune"].schedule.lr == 1e-4 and spec.protocols["finetune"].schedule.epochs == 5
    assert spec.input_size == (256, 128)
    assert specs["attributes/pa100k"] is FAKE_SPECS["attributes/pa100k"]  # not in the plan: untouched
    assert applied == {"reid/market1501": ["protocols.finetune.schedule.lr=0.0001",
                                           "protocols.finetune.schedule.epochs=5", "input_size=[256,128]"]}
    assert FAKE_SPECS["reid/market1501"].input_size == (32, 16)  # the original is not mutated


def test_same_setting_spelled_differently_has_the_same_variant():
    _, a = apply_to_specs(FAKE_SPECS, parse_overrides(["protocols.finetune.schedule.lr=1e-4"]))
    _, b = apply_to_specs(FAKE_SPECS, parse_overrides(["protocols.finetune.schedule.lr=0.0001"]))
    assert variant(a["reid/market1501"]) == variant(b["reid/market1501"])
    _, c = apply_to_specs(FAKE_SPECS, parse_overrides(["protocols.finetune.schedule.lr=2e-4"]))
    assert variant(c["reid/market1501"]) != variant(a["reid/market1501"])


@pytest.mark.parametrize(
    "item,message",
    [
        ("protocols.finetune.schedule.lrr=1", r"protocols\.finetune\.schedule\.lrr: unknown key"),
        ("protocols.finetune.schedul.lr=1", r"unknown key 'protocols\.finetune\.schedul\.lr'"),
        ("reid/market1501:protocols.nope.schedule.lr=1", r"unknown key 'protocols\.nope\.schedule\.lr'"),
    ],
)
def test_an_unknown_key_names_the_key_and_the_spec_file(item, message):
    with pytest.raises(UserError, match=message) as info:
        apply_to_specs(FAKE_SPECS, parse_overrides([item]), ["reid/market1501"])
    assert "market1501.yaml" in str(info.value) and item in str(info.value)


@pytest.mark.parametrize(
    "item,message",
    [
        ("protocols.finetune.schedule.epochs=abc", r"schedule\.epochs: Input should be a valid number"),
        ("protocols.finetune.schedule.batch_size=-1", r"schedule\.batch_size: Input should be greater"),
        ("input_size=[1,2,3]", r"input_size"),
        ("protocols.finetune.kind=sometimes", r"protocols\.finetune\.kind"),
    ],
)
def test_a_wrong_type_names_the_key_and_the_spec_file(item, message):
    with pytest.raises(UserError, match=message) as info:
        apply_to_specs(FAKE_SPECS, parse_overrides([item]), ["reid/market1501"])
    assert "market1501.yaml" in str(info.value)


def test_unscoped_goes_to_every_planned_spec_with_the_key_and_scoped_to_one():
    plan = list(FAKE_SPECS)
    _, applied = apply_to_specs(FAKE_SPECS, parse_overrides(["protocols.linear.schedule.epochs=2"]), plan)
    assert sorted(applied) == sorted(plan)
    _, applied = apply_to_specs(FAKE_SPECS, parse_overrides(["pa100k:protocols.linear.schedule.epochs=2"]),
                                plan)
    assert list(applied) == ["attributes/pa100k"]
    with pytest.raises(UserError, match="scope 'reid/msmt17' matches no spec of the plan"):
        apply_to_specs(FAKE_SPECS, parse_overrides(["reid/msmt17:input_size=[8,8]"]), plan)


def test_track_names_reach_the_protocol_each_spec_uses_for_that_track():
    specs = {**FAKE_SPECS}
    frozen = specs["detection/crowdhuman"].model_dump()
    frozen["protocols"] = {"finetune": frozen["protocols"]["finetune"],
                           "frozen": {**frozen["protocols"]["linear"], "kind": "frozen"}}
    specs["detection/crowdhuman"] = type(FAKE_SPECS["reid/market1501"]).model_validate(frozen)
    new, applied = apply_to_specs(specs, parse_overrides(["protocols.fast.schedule.epochs=2"]))
    assert applied["reid/market1501"] == ["protocols.linear.schedule.epochs=2"]
    assert applied["detection/crowdhuman"] == ["protocols.frozen.schedule.epochs=2"]
    assert new["detection/crowdhuman"].protocols["frozen"].schedule.epochs == 2
    assert new["detection/crowdhuman"].protocols["finetune"].schedule.epochs == 1
    _, paper = apply_to_specs(specs, parse_overrides(["reid/market1501:protocols.paper.schedule.lr=1e-3"]))
    assert paper == {"reid/market1501": ["protocols.finetune.schedule.lr=0.001"]}
