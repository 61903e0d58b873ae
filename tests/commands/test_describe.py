import json

import pytest

from saip_bench.cli import main
from saip_bench.commands.describe import RECIPE_FIELDS
from saip_bench.specs import all_task_specs

SPECS = sorted(all_task_specs())


def test_twelve_specs():
    assert len(SPECS) == 12


@pytest.mark.parametrize("key", SPECS)
def test_describe_json_lists_recipe_fields_and_deviations(key, capsys):
    assert main(["describe", key, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["protocol"] == "finetune" and info["recipe_declared"]
    for field in (*RECIPE_FIELDS, "deviations"):
        assert field in info, field
    for field in ("source", "input", "augmentation", "losses", "test"):
        assert info[field], field
    assert info["head"]["recipe"] and info["head"]["ours"]["type"]
    assert info["optimizer"]["name"] and info["total_batch"] > 0
    assert info["selection"] in ("final", "best_test")
    assert all(set(d) == {"what", "recipe", "ours", "reason"} for d in info["deviations"])


def test_describe_shows_the_open_items_and_recipe_details(capsys):
    main(["describe", "t2i_retrieval/cuhk_pedes", "--json"])
    retrieval = json.loads(capsys.readouterr().out)
    assert not any("item 1" in d["reason"] for d in retrieval["deviations"])  # issue 22 item 1 closed them
    assert retrieval["selection"] == "best_test" and retrieval["optimizer"]["eps"] == 1e-3
    main(["describe", "parsing/lip", "--json"])
    assert any("item 2" in d["reason"] for d in json.loads(capsys.readouterr().out)["deviations"])
    main(["describe", "reid/market1501", "--json"])
    reid = json.loads(capsys.readouterr().out)
    assert reid["drop_path"] == 0.1 and reid["resize"] == {"train": "bicubic", "test": "bilinear"}
    assert reid["groups"]["no_decay"] == [] and reid["groups"]["bias_lr"] == 2.0


def test_describe_text_and_other_protocols(capsys):
    assert main(["describe", "pose/coco"]) == 0
    text = capsys.readouterr().out
    assert "selection" in text and "deviations" in text and "final_norm    True" in text
    assert main(["describe", "pose/coco", "--protocol", "frozen"]) == 0
    assert "no recipe block declared" in capsys.readouterr().out


def test_describe_bad_input_is_one_line_error(capsys):
    assert main(["describe", "reid"]) == 2
    assert "TASK/DATASET" in capsys.readouterr().err
    assert main(["describe", "reid/market1501", "--protocol", "nope"]) == 2
    assert "no protocol 'nope'" in capsys.readouterr().err
