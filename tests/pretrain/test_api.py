import json

from saip_bench.cli import main
from saip_bench.pretrain.api import pretrain
from saip_bench.pretrain.export import load_into_timm

TINY = {
    "img_size": [32, 16],
    "source_size": [32, 16],
    "background_size": [32, 32],
    "batch_size": 4,
    "checkpoint_every": 100,
}
TINY_SAIP = {
    "views": {"global_size": [32, 16], "local_size": [16, 16], "n_local": 1, "canvas_size": [32, 32]},
    "head_out_dim": 64,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "csr_dim": 32,
    "csr_depth": 1,
    "csr_heads": 2,
    "css_dim": 32,
    "css_heads": 2,
    "css_self_blocks": 1,
    "css_conv_layers": 1,
}


def test_pretrain_api_exports_a_timm_loadable_backbone(pretrain_root, tmp_path):
    path = pretrain(
        "saip",
        "vit_tiny",
        "quick",
        pretrain_root,
        tmp_path,
        seed=1,
        steps=2,
        progress=False,
        overrides=TINY,
        method_overrides=TINY_SAIP,
    )
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["method"] == "saip" and meta["step"] == 2 and meta["preset"] == "quick"
    assert len(meta["config_hash"]) == 16 and "loss/csr" in meta["final_losses"]
    load_into_timm(path)
    assert (tmp_path / "checkpoints/last.pt").is_file() and (tmp_path / "log.jsonl").is_file()


def test_cli_errors_are_one_line(pretrain_root, tmp_path, capsys):
    code = main(
        [
            "pretrain",
            "--method",
            "saip",
            "--backbone",
            "nope",
            "--data",
            str(pretrain_root),
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown backbone 'nope'" in err and len(err.strip().splitlines()) == 1
    code = main(
        [
            "pretrain",
            "--method",
            "nope",
            "--backbone",
            "vit_tiny",
            "--data",
            str(pretrain_root),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2 and "unknown method" in capsys.readouterr().err
    code = main(
        [
            "pretrain",
            "--method",
            "saip",
            "--backbone",
            "vit_tiny",
            "--data",
            str(tmp_path / "x"),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2 and "images/" in capsys.readouterr().err
    code = main(
        [
            "pretrain",
            "--method",
            "saip",
            "--backbone",
            "vit_tiny",
            "--data",
            str(pretrain_root),
            "--out",
            str(tmp_path / "fresh"),
            "--resume",
        ]
    )
    assert code == 2 and "no checkpoint" in capsys.readouterr().err


def test_method_overrides_merge_into_the_preset_not_replace_it():
    """``views.colour`` alone keeps the quick preset's view sizes (a shallow merge would drop them)."""
    from saip_bench.pretrain.api import build_method

    overrides = {"views": {"colour": {"jitter_p": 0.0}}}
    method, _ = build_method("saip", "vit_tiny", "quick", method_overrides=overrides)
    assert method.view_cfg.global_size == (128, 64) and method.view_cfg.global1_aug.jitter_p == 0.0


# ------------------------------------------------------------------ issue 24 item 4: --init FILE
def _deit_file(tmp_path):
    """An ImageNet-style DeiT-Tiny checkpoint as its release stores it: {"model": timm names + head}."""
    import timm
    import torch

    torch.manual_seed(7)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000).state_dict()
    path = tmp_path / "deit_tiny_patch16_224.pth"
    torch.save({"model": state}, path)
    return path, state


def test_init_starts_the_method_from_the_published_weights_before_the_first_step(tmp_path):
    import torch

    from saip_bench.pretrain.api import build_method

    path, state = _deit_file(tmp_path)
    method, _ = build_method("dino", "vit_tiny", "quick", init=path)
    loaded = method.backbone.body.state_dict()
    same = [k for k in loaded if k != "pos_embed" and torch.equal(loaded[k], state[k])]
    assert len(same) == len(loaded) - 1  # every tensor but the resampled position embedding
    assert method.init_source["mapping"]["layout"] == "plain" and method.init_source["weights_hash"]
    fresh, _ = build_method("dino", "vit_tiny", "quick")
    assert not torch.equal(fresh.backbone.body.state_dict()["blocks.0.attn.qkv.weight"],
                           state["blocks.0.attn.qkv.weight"])


def test_init_is_named_in_the_export_sidecar(pretrain_root, tmp_path):
    path, _ = _deit_file(tmp_path)
    export = pretrain("mae", "vit_tiny", "quick", pretrain_root, tmp_path / "out", steps=1, progress=False,
                      overrides=TINY, init=path)
    meta = json.loads(export.with_suffix(".json").read_text())
    assert meta["init"]["path"] == str(path.resolve()) and "head.weight" in meta["init"]["mapping"]["dropped"]


def test_cli_init_reaches_the_trainer(tmp_path, monkeypatch):
    import saip_bench.pretrain.api as api

    seen = {}
    monkeypatch.setattr(api, "pretrain", lambda *a, **kw: seen.update(kw) or tmp_path / "b.safetensors")
    code = main(["pretrain", "--method", "mae", "--backbone", "vit_tiny", "--data", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--init", str(tmp_path / "deit.pth")])
    assert code == 0 and seen["init"] == tmp_path / "deit.pth"


def test_random_init_exports_without_a_pool_the_same_weights_as_the_trainer(pretrain_root, tmp_path):
    """``eval --method random`` on real data needs no --pretrain-data: the seeded backbone, bit-identical
    to what the trainer path exports for the same seed."""
    import pytest
    from safetensors.torch import load_file

    from saip_bench.errors import UserError
    from saip_bench.pretrain.api import export_untrained, needs_training_data

    trained = pretrain("random", "vit_tiny", "quick", pretrain_root, tmp_path / "trainer", seed=3,
                       progress=False)
    untrained = export_untrained("random", "vit_tiny", "quick", tmp_path / "none", seed=3)
    a, b = load_file(str(trained)), load_file(str(untrained))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert json.loads(untrained.with_suffix(".json").read_text())["data"] is None
    other = export_untrained("random", "vit_tiny", "quick", tmp_path / "seed4", seed=4)
    assert not all(a[k].equal(load_file(str(other))[k]) for k in a)
    assert not needs_training_data("random") and needs_training_data("mae")
    with pytest.raises(UserError, match="--pretrain-data"):
        export_untrained("mae", "vit_tiny", "quick", tmp_path / "mae", seed=0)
