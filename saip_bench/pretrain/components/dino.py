"""DINO projection head and multi-crop self-distillation loss with teacher centring.

Head: MLP (``nlayers`` linear layers, GELU, no BN) -> L2 normalisation -> weight-normalised linear
layer whose gain is fixed to 1 (DINO's ``norm_last_layer=True``), written directly as a linear layer with
row-normalised weights so nothing depends on the weight-norm hook.

Loss: cross-entropy between sharpened, centred teacher distributions and student distributions over all
(teacher view, student view) pairs except a view with itself. The centre is an EMA of the batch mean of
teacher logits, all-reduced across processes under ``torch.distributed``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError("nlayers must be >= 1")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        for index in range(nlayers):
            layers.append(nn.Linear(dims[index], dims[index + 1]))
            if index < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @property
    def out_dim(self) -> int:
        return self.last_layer.out_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised bottleneck embedding (what the collapse guard watches)."""
        return F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype != torch.float32 else 1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(x)[0]

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, L2-normalised bottleneck embedding) from one pass."""
        embedding = self.embed(x)
        weight = F.normalize(self.last_layer.weight, dim=1)  # weight norm with g == 1
        return F.linear(embedding, weight.to(embedding.dtype)), embedding


def teacher_temperature(step: int, warmup_temp: float, temp: float, warmup_steps: int) -> float:
    """Linear warm-up of the teacher temperature over global steps, then constant."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return temp
    return warmup_temp + (temp - warmup_temp) * step / warmup_steps


class DINOLoss(nn.Module):
    """Multi-crop DINO cross-entropy.

    ``student`` is (S, B, K) logits of S student views; ``teacher`` is (T, B, K) logits of T teacher
    views; teacher view t and student view t are the same image (the pair is skipped), as in DINO where
    the first student views are the global crops.
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float | None = None,
        warmup_teacher_steps: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = teacher_temp if warmup_teacher_temp is None else warmup_teacher_temp
        self.warmup_teacher_steps = warmup_teacher_steps
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # the teacher temperature at ``step``, kept on the device beside it (derived, not saved): dividing by
        # it reads nothing back to the host (a GPU never stalls) and gives a compiled step no Python number
        # to specialise on (a host float recompiled the whole step once per warm-up step)
        self.register_buffer("temperature", torch.full((), self._temperature_at(0)), persistent=False)
        self._host_step = 0  # the step buffer's value on the host: refilling the temperature reads no GPU

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_step = int(self.step)  # once per load
        self.temperature.fill_(self._temperature_at(self._host_step))

    def _temperature_at(self, step: int) -> float:
        return teacher_temperature(
            step, self.warmup_teacher_temp, self.teacher_temp, self.warmup_teacher_steps
        )

    def current_teacher_temp(self) -> float:
        """The temperature as a host number (the step divides by the ``temperature`` buffer instead)."""
        return self._temperature_at(self._host_step)

    def teacher_probs(self, teacher: torch.Tensor) -> torch.Tensor:
        return F.softmax((teacher.float() - self.center) / self.temperature, dim=-1)

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, update_center: bool = True
    ) -> torch.Tensor:
        n_teacher, batch = teacher.shape[0], teacher.shape[1]
        n_student = student.shape[0]
        if n_student < n_teacher or student.shape[1] != batch:
            raise ValueError(
                f"student views {tuple(student.shape)} do not match teacher {tuple(teacher.shape)}"
            )
        teacher = teacher.detach()
        # fp32 even under autocast: einsum would otherwise run in bf16 over K (up to 65,536) classes
        with torch.autocast(device_type=student.device.type, enabled=False):
            probs = self.teacher_probs(teacher)  # (T, B, K)
            log_student = F.log_softmax(student.float() / self.student_temp, dim=-1)  # (S, B, K)
            # cross[t, s] = mean_b sum_k -P_t log P_s, one contraction for all (t, s) pairs
            cross = -torch.einsum("tbk,sbk->ts", probs, log_student) / batch
        # every (teacher, student) pair but a view with itself, in row-major order (what a boolean mask of
        # the diagonal keeps), gathered by slices: a mask index stopped the host each step on a GPU
        loss = torch.cat([torch.cat([cross[t, :t], cross[t, t + 1:]]) for t in range(n_teacher)]).mean()
        if update_center and self.training:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        total = teacher.float().sum(dim=(0, 1))
        count = torch.full((), float(teacher.shape[0] * teacher.shape[1]), device=total.device)  # no copy
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        batch_center = (total / count).unsqueeze(0)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)

    def set_warmup_steps(self, steps: int) -> None:
        """A new warm-up length (a fraction of a run's steps, known once it runs): the temperature follows."""
        self.warmup_teacher_steps = int(steps)
        self.temperature.fill_(self._temperature_at(self._host_step))

    def set_step(self, step: int) -> None:
        """Global optimiser step, for the teacher-temperature warm-up (call from ``on_after_step``)."""
        self.step.fill_(step)
        self._host_step = int(step)
        self.temperature.fill_(self._temperature_at(step))


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of ``probs``; ``log K`` means uniform (collapse to uniform)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()


def max_entropy(dim: int) -> float:
    return math.log(dim)
