import pytest

from saip_bench.errors import UserError
from saip_bench.registry import Registry, did_you_mean


def test_register_get_and_decorator():
    reg: Registry = Registry("thing")
    reg.register("a", 1, note="x")

    @reg.register("b")
    def make_b():
        return "made"

    assert reg.get("a") == 1
    assert reg.create("b") == "made"
    assert reg.meta("a") == {"note": "x"}
    assert reg.names() == ["a", "b"]
    assert "a" in reg and "c" not in reg and len(reg) == 2


def test_duplicate_name_raises():
    reg: Registry = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)


@pytest.mark.parametrize(("name", "message"), [
    ("gamma", r"unknown widget 'gamma'; known widgets: alpha, beta"),  # nothing close: no hint
    ("alpah", r"unknown widget 'alpah' \(did you mean 'alpha'\?\); known widgets: alpha, beta"),
])
def test_unknown_name_lists_known_and_suggests_the_closest(name, message):
    reg: Registry = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(UserError, match=message):
        reg.get(name)
    assert did_you_mean("zzzz", ["alpha", "beta"]) == ""
