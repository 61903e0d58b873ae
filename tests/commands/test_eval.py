import json

import pytest

from saip_bench.bench import runner as runner_module
from saip_bench.cli import main
from saip_bench.commands.eval import _roots
from tests.bench.fakes import FAKE_SPECS, FakePretrainer, FakeTask, fake_loader, fake_read


@pytest.fixture
def fake_hooks(monkeypatch, tiny_backbone_name):
    """Route the real command through the runner with fake task / pretraining (no model training)."""
    original = runner_module.BenchRunner.__init__
    seen = {}

    def init(self, config, hooks=None):
        seen["config"] = config
        hooks = runner_module.BenchHooks(
            specs=FAKE_SPECS,
            get_task=lambda name: FakeTask(),
            read_dataset=fake_read,
            pretrainer=FakePretrainer(),
            backbone_loader=fake_loader,
            method_unsupported=lambda m, b: None,
        )
        original(self, config, hooks)

    monkeypatch.setattr(runner_module.BenchRunner, "__init__", init)
    return seen


@pytest.fixture
def tiny_backbone_name(monkeypatch):
    """The fakes' backbone ``tiny`` passes eval's early name check (it is loaded by ``fake_loader``)."""
    from saip_bench.backbones import BACKBONES

    monkeypatch.setitem(BACKBONES._items, "tiny", fake_loader)
    monkeypatch.setitem(BACKBONES._meta, "tiny", {})


def make_world(root):
    (root / "market1501").mkdir(parents=True)
    (root / "market1501" / "a.txt").write_text("x")
    (root / "pretrain").mkdir()
    (root / ".world.json").write_text(json.dumps({"preset": "tiny", "seed": 3}))


def test_eval_runs_one_unit_and_records_it(fake_hooks, tmp_path, capsys):
    make_world(tmp_path / "world")
    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "--method",
                "saip",
                "--backbone",
                "tiny",
                "--task",
                "reid",
                "--dataset",
                "market1501",
                "--protocol",
                "linear",
                "--data-root",
                str(tmp_path / "world"),
                "--out",
                str(out),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--visualize",
                "3",
                "--json",
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["identity"]["protocol"] == "linear" and record["identity"]["method"] == "saip"
    assert record["provenance"]["data"]["source"] == "synthetic"
    assert record["provenance"]["data"]["synth_preset"] == "tiny"
    config = fake_hooks["config"]
    assert config.visualize == 3 and config.dataset_roots == {"market1501": tmp_path / "world" / "market1501"}
    assert config.pretrain_data == tmp_path / "world" / "pretrain"
    assert len(list((out / "records").glob("*.json"))) == 1


def test_roots_accepts_dataset_folder_or_parent(tmp_path):
    make_world(tmp_path / "w")
    assert _roots(tmp_path / "w", "market1501")[:3] == (
        tmp_path / "w" / "market1501",
        tmp_path / "w" / "pretrain",
        "synthetic",
    )
    assert _roots(tmp_path / "w" / "market1501", "market1501")[0] == tmp_path / "w" / "market1501"
    (tmp_path / "real").mkdir()
    assert _roots(tmp_path / "real", "lip")[1:3] == (None, "real")


def test_method_without_pretraining_images_is_a_user_error(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    assert (
        main(
            [
                "eval",
                "--method",
                "saip",
                "--task",
                "reid",
                "--dataset",
                "market1501",
                "--data-root",
                str(tmp_path / "real"),
            ]
        )
        == 2
    )
    assert "--pretrain-data" in capsys.readouterr().err


def test_a_wrong_size_gt_label_is_blamed_before_any_training(tmp_path, monkeypatch, capsys,
                                                             tiny_backbone_name):
    """Issue 27: a wrong-size LIP val label ran the whole unit, then blamed our prediction PNG."""
    import numpy as np

    from tests.data.readers.builders import build_lip, write_label

    trained = []

    class Untrainable(FakeTask):
        def run(self, ctx):
            trained.append(ctx.spec.key)
            raise AssertionError("the unit ran although a GT label has the wrong size")

    original = runner_module.BenchRunner.__init__

    def init(self, config, hooks=None):  # the real specs and LIP reader; no pretraining, no training
        hooks = runner_module.BenchHooks(get_task=lambda name: Untrainable(), pretrainer=FakePretrainer(),
                                         backbone_loader=fake_loader, method_unsupported=lambda m, b: None)
        original(self, config, hooks)

    monkeypatch.setattr(runner_module.BenchRunner, "__init__", init)
    root = tmp_path / "lip"
    build_lip(root)
    label = root / "TrainVal_parsing_annotations" / "val_segmentations" / "114317_456748.png"
    write_label(label, np.zeros((24, 20)))  # its image is 20x30
    (tmp_path / "pretrain").mkdir()
    code = main(["eval", "--method", "saip", "--backbone", "tiny", "--task", "parsing", "--dataset", "lip",
                 "--data-root", str(root), "--pretrain-data", str(tmp_path / "pretrain"),
                 "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not trained
    image = root / "TrainVal_images" / "val_images" / "114317_456748.jpg"
    assert err == (f"saip-bench: error: {label}: expected a label PNG of its image's size 20x30 (width x "
                   f"height, {image}), found 20x24")


# ------------------------------------------------------------------ issue 25 item 3: --cfg-options
EVAL = ["eval", "--method", "saip", "--backbone", "tiny", "--task", "reid", "--dataset", "market1501",
        "--protocol", "linear"]


def test_eval_cfg_options_change_the_spec_and_are_recorded(fake_hooks, tmp_path, capsys):
    make_world(tmp_path / "world")
    argv = [*EVAL, "--data-root", str(tmp_path / "world"), "--out", str(tmp_path / "run"), "--cache-dir",
            str(tmp_path / "cache"), "--json", "--cfg-options", "protocols.linear.schedule.lr=1e-4",
            "input_size=[64,32]"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    applied = ["protocols.linear.schedule.lr=0.0001", "input_size=[64,32]"]
    assert record["provenance"]["cfg_options"] == applied
    assert record["identity"]["protocol"].startswith("linear+cfg-")
    assert fake_hooks["config"].cfg_options == ("protocols.linear.schedule.lr=1e-4", "input_size=[64,32]")


@pytest.mark.parametrize(
    "option,message",
    [("protocols.linear.schedule.lrr=1", "protocols.linear.schedule.lrr: unknown key"),
     ("protocols.nope.schedule.lr=1", "unknown key 'protocols.nope.schedule.lr'"),
     ("input_size=big", "input_size: Input should be a valid")],
)
def test_eval_bad_cfg_option_names_key_and_spec_file(fake_hooks, tmp_path, capsys, option, message):
    make_world(tmp_path / "world")
    argv = [*EVAL, "--data-root", str(tmp_path / "world"), "--out", str(tmp_path / "run"), "--cache-dir",
            str(tmp_path / "cache"), "--cfg-options", option]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "market1501.yaml" in err and not (tmp_path / "run" / "records").exists()


# ------------------------------------------------------------------ issue 24 item 5: eval --checkpoint FILE
def test_eval_a_published_checkpoint_end_to_end(synth_world, tmp_path, capsys):
    """A DeiT-Tiny release ({"model": timm names + 1000-class head}) scored on the tiny world, no sidecar."""
    import timm
    import torch

    torch.manual_seed(0)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000).state_dict()
    path = tmp_path / "deit_tiny_patch16_224.pth"
    torch.save({"model": state}, path)
    code = main(["eval", "--checkpoint", str(path), "--task", "reid", "--dataset", "market1501",
                 "--protocol", "linear", "--data-root", str(synth_world), "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache"), "--limit", "8", "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["identity"]["method"] == "deit_tiny_patch16_224"
    assert record["identity"]["backbone"] == "vit_tiny"  # the backbone the file fits
    pretrain = record["provenance"]["pretrain"]
    assert pretrain["source"] == "external" and pretrain["external"]["path"] == str(path.resolve())
    assert pretrain["external"]["mapping"]["missing"] == [] and "rank1" in record["scores"]


def test_eval_refuses_a_checkpoint_of_another_architecture_listing_keys(synth_world, tmp_path, capsys):
    import timm
    import torch

    state = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    state["blocks.0.attn.qkv.weight"] = torch.zeros(48, 16)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    code = main(["eval", "--checkpoint", str(path), "--backbone", "vit_tiny", "--task", "reid",
                 "--dataset", "market1501", "--protocol", "linear", "--data-root", str(synth_world),
                 "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--limit", "8"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err
    assert "blocks.0.attn.qkv.weight: checkpoint (48, 16) vs vit_tiny (576, 192)" in err


@pytest.mark.parametrize(("flag", "value", "hint"), [
    ("--method", "saipp", "unknown method 'saipp' (did you mean 'saip'?)"),
    ("--backbone", "vit_tinyy", "unknown backbone 'vit_tinyy' (did you mean 'vit_tiny'?)"),
    ("--dataset", "market", "(did you mean 'reid/market1501'?)"),
])
def test_a_misspelt_name_is_named_with_a_hint_before_any_work(tmp_path, capsys, flag, value, hint):
    """Checked before the data root or the pretraining images (a typo used to read as missing data)."""
    args = {"--method": "saip", "--backbone": "vit_tiny", "--dataset": "market1501", flag: value}
    argv = ["eval", "--task", "reid", "--data-root", str(tmp_path / "absent")]
    for key, val in args.items():
        argv += [key, val]
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert hint in err and "does not exist" not in err and "--pretrain-data" not in err


def test_the_data_root_defaults_to_saip_data(fake_hooks, tmp_path, capsys, monkeypatch):
    argv = ["eval", "--method", "saip", "--backbone", "tiny", "--task", "reid", "--dataset", "market1501",
            "--protocol", "linear", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    monkeypatch.delenv("SAIP_DATA", raising=False)
    assert main(argv) == 2 and "--data-root DIR or set $SAIP_DATA" in capsys.readouterr().err
    make_world(tmp_path / "world")
    monkeypatch.setenv("SAIP_DATA", str(tmp_path / "world"))
    assert main(argv) == 0
    assert fake_hooks["config"].dataset_roots == {"market1501": tmp_path / "world" / "market1501"}
