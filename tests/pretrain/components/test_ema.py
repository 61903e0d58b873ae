import itertools
import math

import torch
from torch import nn

from saip_bench.pretrain.components.ema import EMATeacher, cosine_momentum


def test_cosine_momentum_endpoints_and_midpoint():
    assert cosine_momentum(0, 100) == 0.996
    assert cosine_momentum(100, 100) == 1.0
    assert math.isclose(cosine_momentum(50, 100), 0.998)
    # global, not per-epoch: monotone over the whole run
    values = [cosine_momentum(s, 1000) for s in range(0, 1001, 10)]
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_ema_update_math_and_frozen_eval_teacher():
    student = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = teacher.module[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
    momentum = teacher.update(student, step=0, total_steps=10)
    assert momentum == 0.996
    expected = 0.996 * before + 0.004 * student[0].weight
    torch.testing.assert_close(teacher.module[0].weight, expected)
    teacher.train()
    assert not teacher.module.training
    assert "last_momentum" in teacher.state_dict()
