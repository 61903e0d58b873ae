import pytest
import torch

from saip_bench.backbones import count_parameters, create_backbone
from saip_bench.errors import SpecError
from saip_bench.pretrain.components.css import CSSDecoder
from saip_bench.pretrain.methods.saip import SAIP, SAIPNet, attention_kl, css_bce, parse_config

from .._micro import MICRO_SAIP, micro_saip


def _batch(n=2, size=(32, 16), bg=(32, 32)):
    return {
        "image": torch.rand(n, 3, *size),
        "sample_seed": torch.arange(n),
        "step_seed": torch.tensor(1),
        "background": torch.rand(n, 3, *bg),
    }


def test_paper_parameter_counts():
    backbone = create_backbone("vit_tiny")
    assert count_parameters(backbone) == 5_511_360  # 147,648 + 192 + 129*192 + 12*444,864 + 384
    net = SAIPNet(backbone, parse_config({}), use_csr=True)
    head = (192 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 256 + 256) + 256 * 65536
    assert count_parameters(net.csm_head) == head
    block512 = 12 * 512 * 512 + 13 * 512
    csr = (192 * 512 + 512) + 512 + (2 + 128) * 512 + 8 * block512 + 2 * 512 + (512 * 768 + 768)
    assert count_parameters(net.csr_decoder) == csr
    css = (
        (192 * 512 + 512)
        + 2 * block512  # query projection + 2 self-attention blocks
        + (192 * 512 + 512)
        + 2 * 512  # memory projection + norm
        + (12 * 512 * 512 + 13 * 512)  # cross block: MHA (4 d^2 + 4 d) + MLP (8 d^2 + 5 d) + 2 norms
        + 2 * 512
        + (512 * 512 + 512)  # kernel norm + projection
        + (192 * 512 + 512)
        + 3 * (9 * 512 * 512 + 512)  # conv mask head
    )
    assert count_parameters(net.css_decoder) == css


def test_attention_kl_zero_for_equal_maps_and_hand_value():
    logits = torch.randn(2, 3, 5, 5)
    assert attention_kl(logits, logits).abs() < 1e-6
    teacher = torch.log(torch.tensor([[[[0.5, 0.5]]]]))
    student = torch.log(torch.tensor([[[[0.25, 0.75]]]]))
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    torch.testing.assert_close(attention_kl(teacher, student), expected)


def test_css_loss_near_zero_when_kernel_points_at_paste():
    decoder = CSSDecoder(8, 8, dim=4, num_heads=2, self_blocks=1, conv_layers=1)
    paste = torch.zeros(1, 1, 32, 32)
    paste[..., 8:24, 0:16] = 1.0
    target = torch.nn.functional.interpolate(paste, size=(4, 4), mode="nearest")[:, 0]
    features = torch.zeros(1, 4, 4, 4)
    features[:, 0] = (2 * target - 1) * 20.0  # channel 0 = "is the pasted person"
    e0 = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    decoder.kernel = lambda query, memory: e0  # type: ignore[method-assign]
    hit = css_bce(decoder(torch.zeros(1, 3, 8), torch.zeros(1, 16, 4), features), paste)
    assert hit < 1e-6
    decoder.kernel = lambda query, memory: -e0  # type: ignore[method-assign]
    miss = css_bce(decoder(torch.zeros(1, 3, 8), torch.zeros(1, 16, 4), features), paste)
    assert miss > 10.0


def test_step_logs_every_term_and_total_is_their_sum():
    method = micro_saip()
    views = method.make_views(_batch(), torch.Generator())
    out = method(views)
    terms = [k for k in out if k.startswith("loss/")]
    assert sorted(terms) == ["loss/csm_attn", "loss/csm_rep", "loss/csr", "loss/css_inst", "loss/css_roi"]
    torch.testing.assert_close(out["loss"], sum(out[k] for k in terms))
    out["loss"].backward()
    assert method.student.backbone.body.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in method.teacher.parameters())


@pytest.mark.parametrize(
    "switch,missing",
    [
        ({"csr": False}, {"loss/csr"}),
        ({"css": False}, {"loss/css_inst", "loss/css_roi"}),
        ({"csm": False}, {"loss/csm_rep", "loss/csm_attn"}),
        ({"csm_attn": False}, {"loss/csm_attn"}),
    ],
)
def test_ablation_switches(switch, missing):
    method = micro_saip(**switch)
    out = method(method.make_views(_batch(), torch.Generator()))
    assert not missing & set(out)
    assert torch.isfinite(out["loss"])


def test_ema_expert_moves_towards_student():
    method = micro_saip()
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = method.teacher.module.inter_norm.weight.clone()
    method.on_after_step(1, 100)
    after = method.teacher.module.inter_norm.weight
    assert torch.all(after > before) and torch.all(after < method.student.inter_norm.weight)


@pytest.mark.parametrize("name", ["tinyvit_5m", "starnet_s3"])
def test_non_vit_backbones_run_csm_and_css_without_csr(name):
    config = {
        **MICRO_SAIP,
        "views": {"global_size": [64, 32], "local_size": [32, 32], "n_local": 1, "canvas_size": [64, 64]},
    }
    method = SAIP(create_backbone(name, img_size=(64, 32)), config)
    out = method(method.make_views(_batch(2, (64, 32), (64, 64)), torch.Generator()))
    assert {"loss/csm_rep", "loss/css_inst", "loss/css_roi"} <= set(out)
    assert "loss/csr" not in out and "loss/csm_attn" not in out
    out["loss"].backward()


def test_csr_on_convnet_is_refused_with_a_reason():
    backbone = create_backbone("starnet_s3", img_size=(64, 32))
    reason = SAIP.unsupported_reason(backbone, {"csr": True})
    assert reason and "CSR" in reason and "starnet_s3" in reason
    with pytest.raises(SpecError, match="CSR"):
        SAIP(backbone, {**MICRO_SAIP, "csr": True})


def test_colour_setting_reaches_the_views_and_unknown_fields_are_refused():
    method = micro_saip(views={**MICRO_SAIP["views"], "colour": {"jitter_p": 0.0, "grayscale_p": 0.0}})
    assert method.view_cfg.global1_aug.jitter_p == 0.0 and method.view_cfg.local_aug.grayscale_p == 0.0
    assert method.view_cfg.global1_aug.blur_p == 1.0
    with pytest.raises(SpecError, match="unknown colour field"):
        parse_config({"views": {"colour": {"hue_p": 0.1}}})
