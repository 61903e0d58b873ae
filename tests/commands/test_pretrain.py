"""``saip-bench pretrain`` setting overrides: dotted keys become nested mappings, values are JSON."""

import pytest

from saip_bench.commands.pretrain import parse_settings
from saip_bench.errors import UserError


def test_dotted_keys_nest_and_values_are_json():
    items = ["views.colour={\"jitter_p\": 0}", "views.n_local=4", "csm=false", "name=plain"]
    assert parse_settings(items, "--method-set") == {
        "views": {"colour": {"jitter_p": 0}, "n_local": 4}, "csm": False, "name": "plain",
    }


@pytest.mark.parametrize("item", ["novalue", "=3", "a=1 a.b=2"])
def test_malformed_settings_are_one_clear_error(item):
    items = item.split(" ")
    with pytest.raises(UserError, match="--set"):
        parse_settings(items, "--set")
