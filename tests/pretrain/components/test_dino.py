import math

import torch
import torch.nn.functional as F

from saip_bench.pretrain.components.dino import DINOHead, DINOLoss, teacher_temperature


def test_head_shapes_params_and_unit_norm_last_layer():
    head = DINOHead(192, out_dim=1000, hidden_dim=64, bottleneck_dim=32, nlayers=3)
    out = head(torch.randn(5, 192))
    assert out.shape == (5, 1000)
    expected_params = (192 * 64 + 64) + (64 * 64 + 64) + (64 * 32 + 32) + 32 * 1000
    assert sum(p.numel() for p in head.parameters()) == expected_params
    # logits are cosines of a unit embedding with unit rows: |logit| <= 1
    assert out.abs().max() <= 1.0 + 1e-5


def test_paper_head_parameter_count():
    head = DINOHead(192)
    expected = (192 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 256 + 256) + 256 * 65536
    assert sum(p.numel() for p in head.parameters()) == expected


def test_loss_equals_hand_computation_and_skips_same_view():
    torch.manual_seed(0)
    student = torch.randn(3, 4, 6)
    teacher = torch.randn(2, 4, 6)
    loss_fn = DINOLoss(6, student_temp=0.1, teacher_temp=0.04, center_momentum=0.9)
    center = torch.randn(1, 6)
    loss_fn.center.copy_(center)
    loss = loss_fn(student, teacher)
    terms = []
    for t in range(2):
        p_t = F.softmax((teacher[t] - center) / 0.04, dim=-1)
        for s in range(3):
            if s == t:
                continue
            terms.append((-(p_t * F.log_softmax(student[s] / 0.1, dim=-1)).sum(-1)).mean())
    assert len(terms) == 4
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    expected_center = 0.9 * center + 0.1 * teacher.reshape(-1, 6).mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected_center)


def test_no_center_update_in_eval_and_teacher_temp_warmup():
    loss_fn = DINOLoss(4, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_steps=10).eval()
    loss_fn(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    assert torch.count_nonzero(loss_fn.center) == 0
    assert math.isclose(teacher_temperature(5, 0.04, 0.07, 10), 0.055)
    loss_fn.set_step(20)
    assert loss_fn.current_teacher_temp() == 0.07


def test_loss_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 1000), torch.randn(2, 4, 1000)
    exact = DINOLoss(1000).eval()(student, teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = DINOLoss(1000).eval()(student.bfloat16(), teacher.bfloat16())
    assert auto.dtype == torch.float32
    torch.testing.assert_close(
        auto, DINOLoss(1000).eval()(student.bfloat16().float(), teacher.bfloat16().float())
    )
    assert abs(float(auto) - float(exact)) < 0.05
