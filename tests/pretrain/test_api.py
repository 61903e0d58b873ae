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
