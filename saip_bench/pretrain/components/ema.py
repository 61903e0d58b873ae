"""EMA ("momentum") teacher of a whole module with a cosine momentum schedule over GLOBAL steps.

Why global: the authors' release indexes its momentum schedule with the within-epoch iteration, so the
momentum falls back to 0.996 at the start of every epoch (docs/method.md#momentum-schedule). Here the
momentum is a
pure function of (global step, total steps), which also makes resume exact.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """``final - (final - base) * (1 + cos(pi * step / total)) / 2``: base at step 0, final at the end."""
    if total_steps <= 0:
        return final
    progress = min(max(step / total_steps, 0.0), 1.0)
    return final - (final - base) * (1.0 + math.cos(math.pi * progress)) / 2.0


class EMATeacher(nn.Module):
    """A frozen deep copy of ``student``, updated as ``t <- m t + (1 - m) s`` after each optimiser step.

    The copy is a sub-module, so its weights live in the owner's ``state_dict`` and are checkpointed
    with it. It always stays in eval mode (no dropout / drop-path in the teacher).
    """

    def __init__(self, student: nn.Module, base: float = 0.996, final: float = 1.0) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.module.eval()
        self.base = base
        self.final = final
        self.register_buffer("last_momentum", torch.tensor(float("nan")), persistent=True)

    def train(self, mode: bool = True) -> EMATeacher:
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int, total_steps: int) -> float:
        """EMA of parameters (buffers are copied); returns the momentum used."""
        momentum = cosine_momentum(step, total_steps, self.base, self.final)
        teacher_params = list(self.module.parameters())
        student_params = [p.detach() for p in student.parameters()]
        if len(teacher_params) != len(student_params):
            raise RuntimeError("EMA teacher and student have different parameter lists")
        torch._foreach_mul_(teacher_params, momentum)
        torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)
        for t_buf, s_buf in zip(self.module.buffers(), student.buffers(), strict=True):
            t_buf.copy_(s_buf)
        self.last_momentum.fill_(momentum)
        return momentum
