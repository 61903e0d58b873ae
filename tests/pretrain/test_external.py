"""Issue 24: published checkpoints (timm, MAE, HAP, PATH, plain PyTorch) remapped into our backbones.

The state dicts are built here with the published key names of each release (timm's ViT names, MAE's
``model`` wrapper with ``decoder_*`` / ``mask_token``, HAP's ``state_dict`` wrapper, PATH's
``backbone_module.`` prefix, timm training checkpoints' ``state_dict_ema`` and ``module.``).
"""

from __future__ import annotations

import argparse

import pytest
import timm
import torch
from safetensors.torch import save_file

from saip_bench.backbones import create_backbone
from saip_bench.pretrain.external import ArchitectureMismatch, guess_backbone, load_external

QKV = "blocks.3.attn.qkv.weight"


@pytest.fixture(scope="module")
def deit() -> dict[str, torch.Tensor]:
    """An ImageNet-style DeiT-Tiny / ViT-Tiny state dict at 224 (14x14 grid, 1000-class head)."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000).state_dict()


def _mae_extras() -> dict[str, torch.Tensor]:
    return {"mask_token": torch.zeros(1, 1, 192), "decoder_embed.weight": torch.zeros(128, 192),
            "decoder_blocks.0.attn.qkv.weight": torch.zeros(384, 128), "decoder_norm.weight": torch.ones(128),
            "decoder_pred.weight": torch.zeros(768, 128), "decoder_pos_embed": torch.zeros(1, 197, 128)}


LAYOUTS = {
    "timm-plain": lambda sd: dict(sd),
    "timm-train": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()},
                              "state_dict_ema": dict(sd), "epoch": 3},
    "deit": lambda sd: {"model": dict(sd)},
    "mae": lambda sd: {"model": {**sd, **_mae_extras()}, "epoch": 799,
                       "args": argparse.Namespace(model="mae_vit_tiny_patch16", mask_ratio=0.75)},
    "hap": lambda sd: {"state_dict": {f"module.{k}": v for k, v in {**sd, **_mae_extras()}.items()}},
    "path": lambda sd: {"state_dict": {**{f"module.backbone_module.{k}": v for k, v in sd.items()},
                                       "module.decoder.reid.bn.weight": torch.ones(192)}},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_released_layout_loads_with_an_empty_missing_report(tmp_path, deit, layout):
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](deit), path)
    net, report = load_external(path, "vit_tiny")
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(net.body.state_dict()[QKV], deit[QKV])
    assert {"head.weight", "head.bias"} <= set(report.dropped)
    assert report.resized == {"pos_embed": [[14, 14], [16, 8]]}  # 224x224 -> our 256x128 grid
    if layout in ("mae", "hap"):
        assert report.layout.startswith("mae") and "decoder_pred.weight" in report.dropped
    if layout == "path":
        assert "backbone_module." in report.prefixes and "decoder.reid.bn.weight" in report.dropped
    if layout == "timm-train":
        assert report.wrapper == "state_dict_ema"  # the EMA weights, as timm evaluates them


def test_safetensors_and_a_timm_hybrid_are_found_without_naming_the_backbone(tmp_path):
    body = create_backbone("tinyvit_5m").body
    path = tmp_path / "tiny_vit_5m_224.in1k.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(path))
    assert guess_backbone(path) == "tinyvit_5m"
    net, report = load_external(path)
    assert net.name == "tinyvit_5m" and report.missing == [] and report.unexpected == []
    key = next(iter(body.state_dict()))
    assert torch.equal(net.body.state_dict()[key], body.state_dict()[key])


def test_a_wrong_architecture_is_refused_naming_the_file_and_the_keys(tmp_path, deit):
    state = {k: v for k, v in deit.items() if not k.startswith(("blocks.10.", "blocks.11."))}
    state["patch_embed.proj.weight"] = torch.zeros(192, 3, 14, 14)  # patch 14, not 16
    path = tmp_path / "vit_tiny_p14_10blocks.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ArchitectureMismatch) as caught:
        load_external(path, "vit_tiny")
    text = str(caught.value)
    assert str(path) in text and "patch_embed.proj.weight: checkpoint (192, 3, 14, 14)" in text
    assert "blocks.11.attn.qkv.weight" in text and "essential keys missing" in text


def test_solider_swin_release_maps_to_no_backbone_and_says_so(tmp_path):
    state = {"layers.0.blocks.0.attn.relative_position_bias_table": torch.zeros(169, 3),
             "layers.0.blocks.0.attn.qkv.weight": torch.zeros(288, 96),
             "patch_embed.proj.weight": torch.zeros(96, 3, 4, 4),
             "semantic_embed_w.0.weight": torch.zeros(96, 1)}
    path = tmp_path / "solider_swin_tiny.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(ArchitectureMismatch, match="Swin Transformer.*SOLIDER.*none of them"):
        load_external(path)


def test_pickled_code_in_a_checkpoint_is_refused_not_run(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": torch.nn.Linear(1, 1)}, path)
    with pytest.raises(Exception, match="evil.pth: expected a safetensors, timm or PyTorch checkpoint"):
        load_external(path, "vit_tiny")
