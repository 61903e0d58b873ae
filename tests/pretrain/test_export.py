import json

import pytest
import torch

from saip_bench.backbones import create_backbone
from saip_bench.errors import DataFormatError
from saip_bench.pretrain.export import load_backbone, load_into_timm, save_backbone


def test_vit_tiny_export_loads_into_timm_strictly(tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny", img_size=(256, 128))
    path = save_backbone(
        backbone, tmp_path / "b.safetensors", {"method": "saip", "step": 7, "config_hash": "x"}
    )
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["arch"] == "vit_tiny" and meta["method"] == "saip" and meta["step"] == 7
    assert meta["timm_name"] == "vit_tiny_patch16_224" and meta["img_size"] == [256, 128]
    model = load_into_timm(path)  # strict load: no missing / unexpected keys
    images = torch.randn(1, 3, 256, 128)
    torch.testing.assert_close(
        model.eval().forward_features(images), backbone.body.eval().forward_features(images)
    )
    loaded = load_backbone(path)
    torch.testing.assert_close(loaded.eval()(images), backbone.eval()(images))
    resized = load_backbone(path, img_size=(384, 128))
    assert resized.body.pos_embed.shape == (1, 1 + 24 * 8, 192)


def test_convnet_export_roundtrip(tmp_path):
    backbone = create_backbone("starnet_s3", img_size=(64, 32))
    path = save_backbone(backbone, tmp_path / "s.safetensors", {"method": "dino"})
    loaded = load_backbone(path)
    images = torch.randn(1, 3, 64, 32)
    torch.testing.assert_close(loaded.eval()(images), backbone.eval()(images))


def test_missing_sidecar_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="sidecar"):
        load_backbone(tmp_path / "none.safetensors")


def test_a_checkpoint_with_nan_or_inf_weights_is_refused_at_load_naming_file_and_tensor(tmp_path):
    """Issue 27: a diverged checkpoint loaded fine and ended in a raw FloatingPointError much later."""
    from safetensors.torch import load_file, save_file

    from saip_bench.errors import SaipBenchError

    backbone = create_backbone("starnet_s3", img_size=(64, 32))
    path = save_backbone(backbone, tmp_path / "s.safetensors", {"method": "dino"})
    state = load_file(str(path))
    name = next(k for k, v in sorted(state.items()) if v.dim() == 4 and min(v.shape[:2]) >= 2)
    state[name][0, 1, 0, 0] = float("nan")
    state[name][1, 0, 0, 0] = float("inf")
    save_file(state, str(path))
    for load in (load_backbone, load_into_timm):
        with pytest.raises(SaipBenchError) as caught:
            load(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: expected finite weights")
        assert f"tensor {name!r}" in message
        assert "holds 2 non-finite values, the first nan at index (0, 1, 0, 0)" in message
