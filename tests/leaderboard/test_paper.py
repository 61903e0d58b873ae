import pytest

from saip_bench.errors import SpecError
from saip_bench.leaderboard.paper import load_paper, match_metric


def test_paper_numbers_match_the_digest():
    paper = load_paper()
    assert len(paper) == 36 and set(paper["family"]) == {"vit", "convnet", "hybrid"}
    value = paper.set_index(["family", "dataset"])["value"]
    assert value["vit", "market1501"] == 95.2 and value["hybrid", "fashionpedia"] == 41.3
    assert value["convnet", "coco_wholebody"] == 52.7
    lip = paper[(paper["family"] == "hybrid") & (paper["dataset"] == "lip")].iloc[0]
    assert lip["method"] == "saip" and lip["value"] == 57.0
    assert paper["metric_confidence"].str.startswith("UNCONFIRMED").all()
    assert (paper["source"].str.contains("2503.08201")).all()


def test_bad_paper_file_is_named(tmp_path):
    (tmp_path / "fig1_outer.csv").write_text("family,dataset\nvit,market1501\n")
    with pytest.raises(SpecError, match="fig1_outer.csv: missing columns"):
        load_paper(tmp_path)


@pytest.mark.parametrize(
    "wanted,available,expected",
    [
        ("rank1", ["mAP", "rank1"], "rank1"),
        ("R1", ["R@1", "mAP"], "R@1"),
        ("rank1", ["R1", "mAP"], "R1"),
        ("mIoU", ["pixel_acc", "miou"], "miou"),
        ("AP", ["AP50", "AP"], "AP"),
        ("mA", ["F1"], None),
    ],
)
def test_match_metric(wanted, available, expected):
    assert match_metric(wanted, available) == expected
