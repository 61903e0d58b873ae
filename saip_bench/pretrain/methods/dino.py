"""DINO (Caron et al., ICCV'21): multi-crop self-distillation with an EMA teacher, centring, sharpening.

Reused from ``components``: ``DINOHead`` (MLP -> L2 norm -> normalised last layer), ``DINOLoss``
(centre momentum 0.9, teacher-temperature warm-up over global steps) and ``EMATeacher`` (cosine momentum
0.996 -> 1 over *global* steps). Method-specific here: the multi-crop views (2 global + N local crops
with DINO's photometric recipe), the teacher seeing only the global crops, freezing the last head layer
for the first steps (DINO's ``freeze_last_layer``), and the collapse statistics.

Works for every backbone family: the image embedding is the backbone's global token (ViT CLS, pooled
feature map for hybrid / ConvNet).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.errors import SpecError
from saip_bench.pretrain.base import METHODS, PretrainMethod
from saip_bench.pretrain.components.dino import DINOHead, DINOLoss, entropy
from saip_bench.pretrain.components.ema import EMATeacher
from saip_bench.pretrain.methods._common import batch_rngs, method_colour_augments
from saip_bench.pretrain.views import augmented_crops, normalize

DINO_DEFAULTS: dict[str, Any] = {
    "global_size": None,  # None: the backbone input size (256x128 in paper)
    "local_size": None,  # None: half the global size (128x64 in paper)
    "global_scale": [0.4, 1.0],
    "local_scale": [0.05, 0.4],
    "crop_ratio": [0.4, 0.6],
    "local_crops": 8,
    "out_dim": 65536,
    "hidden_dim": 2048,
    "bottleneck_dim": 256,
    "head_layers": 3,
    "student_temp": 0.1,
    "teacher_temp": 0.07,
    "warmup_teacher_temp": 0.04,
    "teacher_temp_warmup_fraction": 0.1,
    "center_momentum": 0.9,
    "momentum_base": 0.996,
    "momentum_final": 1.0,
    "freeze_last_layer_fraction": 0.0,
    # optional "colour": ColorAugment overrides of every view (e.g. {jitter_p: 0, grayscale_p: 0}); left out
    # of the defaults so checkpoints without it keep their config hash
}


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Std over the batch of L2-normalised embeddings, averaged over dims (0 = every image identical)."""
    z = F.normalize(embeddings.detach().float(), dim=-1)
    return z.std(dim=0).mean()


class HeadedEncoder(nn.Module):
    """Backbone + projection head; ``forward`` maps images to head outputs from the global token."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(images)["cls"])


@METHODS.register("dino", paper="Caron et al., ICCV 2021")
class DINO(PretrainMethod):
    """DINO: multi-crop self-distillation, EMA teacher, centring + sharpening (every backbone family)."""

    name: ClassVar[str] = "dino"
    config_keys: ClassVar[frozenset[str]] = frozenset({*DINO_DEFAULTS, "colour"})

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, {**DINO_DEFAULTS, **config})
        cfg = self.config
        if int(cfg["local_crops"]) < 0:
            raise SpecError("dino local_crops must be >= 0")
        temps = (cfg["student_temp"], cfg["teacher_temp"], cfg["warmup_teacher_temp"])
        if min(float(t) for t in temps) <= 0:
            raise SpecError("dino temperatures must be > 0")
        global_size = cfg["global_size"] or backbone.img_size
        self.global_size = (int(global_size[0]), int(global_size[1]))
        local_size = cfg["local_size"] or (self.global_size[0] // 2, self.global_size[1] // 2)
        self.local_size = (int(local_size[0]), int(local_size[1]))
        self.augs = method_colour_augments("dino", cfg)
        self.head = DINOHead(
            backbone.num_features, int(cfg["out_dim"]), int(cfg["hidden_dim"]),
            int(cfg["bottleneck_dim"]), int(cfg["head_layers"]),
        )
        self.teacher = EMATeacher(
            HeadedEncoder(backbone, self.head), float(cfg["momentum_base"]), float(cfg["momentum_final"])
        )
        self.loss_fn = DINOLoss(
            int(cfg["out_dim"]), float(cfg["student_temp"]), float(cfg["teacher_temp"]),
            float(cfg["warmup_teacher_temp"]), 0, float(cfg["center_momentum"]),
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # the frozen window is a fraction of all steps, known from the first on_after_step; a positive
        # fraction freezes step 0 as well
        frozen = 1 if float(cfg["freeze_last_layer_fraction"]) > 0 else 0
        self.register_buffer("freeze_steps", torch.tensor(frozen, dtype=torch.long))
        # same for the teacher-temperature warm-up length (1 = "warming up" until the length is known);
        # a buffer, so a resumed run uses the right temperature from its first step
        warming = 1 if float(cfg["teacher_temp_warmup_fraction"]) > 0 else 0
        self.register_buffer("temp_warmup_steps", torch.tensor(warming, dtype=torch.long))
        # the three schedule buffers' values on the host (None: read once, after a checkpoint was loaded):
        # they are asked every step (per view), and reading them from a GPU stalled the host each time
        self._host_schedule: dict[str, int] | None = {"step": 0, "freeze_steps": frozen,
                                                      "temp_warmup_steps": warming}
        # what the step reads of them, as one host flag that changes once a run, when the frozen window
        # ends: a compiled step (``compile: step``) specialises on it, and would recompile every step if it
        # compared the step counters itself
        self._last_layer_frozen = frozen > 0
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_schedules())
        self.sync_schedules()

    SCHEDULE_BUFFERS: ClassVar[tuple[str, ...]] = ("step", "freeze_steps", "temp_warmup_steps")

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_schedule = None

    def _refresh_schedules(self) -> None:
        """After a load (the loss's buffers included): the host copies, the frozen flag, the temperature."""
        self._last_layer_frozen = self.schedule_value("step") < self.schedule_value("freeze_steps")
        self.sync_schedules()

    def schedule_value(self, name: str) -> int:
        """A schedule buffer's value, from its host copy."""
        if self._host_schedule is None:
            self._host_schedule = {key: int(getattr(self, key)) for key in self.SCHEDULE_BUFFERS}
        return self._host_schedule[name]

    def _set_schedule(self, name: str, value: int) -> None:
        getattr(self, name).fill_(value)
        self.schedule_value(name)  # the host copy exists before it is changed
        assert self._host_schedule is not None
        self._host_schedule[name] = int(value)
        self._last_layer_frozen = self._host_schedule["step"] < self._host_schedule["freeze_steps"]

    # ---- views -------------------------------------------------------------------------------
    def global_views(self, images: torch.Tensor, rngs: list[np.random.Generator]) -> list[torch.Tensor]:
        """Two global crops: blur p=1 / p=0.1 + solarize p=0.2 (DINO; shared SAIP colour ops)."""
        cfg = self.config
        augments = (self.augs["global1_aug"], self.augs["global2_aug"])
        crops = augmented_crops(images, rngs, augments, self.global_size, tuple(cfg["global_scale"]),
                                tuple(cfg["crop_ratio"]))
        return [normalize(crop) for crop in crops]

    def local_views(self, images: torch.Tensor, rngs: list[np.random.Generator]) -> list[torch.Tensor]:
        cfg = self.config
        augments = (self.augs["local_aug"],) * int(cfg["local_crops"])
        crops = augmented_crops(images, rngs, augments, self.local_size, tuple(cfg["local_scale"]),
                                tuple(cfg["crop_ratio"]))
        return [normalize(crop) for crop in crops]

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        images = batch["image"]
        rngs = batch_rngs(batch, generator)
        return {"global": self.global_views(images, rngs), "local": self.local_views(images, rngs)}

    # ---- forward -----------------------------------------------------------------------------
    def head_logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student head -> (logits, L2-normalised embedding), for the rows of every view at once.

        The last layer gets no gradient during ``freeze_last_layer_steps`` (DINO's ``freeze_last_layer``).
        Why one call for all views: the (65536 x 256) weight is normalised per call, forward and backward;
        one call per view did that 10 times a ``paper`` step (2 global + 8 local crops), about 23 GB moved
        a step whatever the batch (37.7 of a batch-16 step's GB, 14.4 now; ``benchmarks/roofline.py``).
        """
        weight = F.normalize(self.head.last_layer.weight, dim=1)
        if self._last_layer_frozen:
            # a zero gradient rather than none: DDP (find_unused_parameters=False) needs every
            # parameter in the graph; AdamW then leaves the row-normalised weight's direction unchanged
            weight = weight.detach() + 0.0 * weight
        embedding = self.head.embed(features)
        return F.linear(embedding, weight), embedding

    def student_cls(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Global tokens of each view; views of one size go through the backbone together."""
        out: list[torch.Tensor] = []
        start = 0
        while start < len(views):
            stop = start
            while stop < len(views) and views[stop].shape[-2:] == views[start].shape[-2:]:
                stop += 1
            cls = self.backbone.forward_features(torch.cat(views[start:stop]))["cls"]
            out.extend(cls.chunk(stop - start))
            start = stop
        return out

    @torch.no_grad()
    def teacher_outputs(self, global_views: list[torch.Tensor]) -> torch.Tensor:
        """(T, B, K) teacher logits of the global crops."""
        teacher = self.teacher.module
        logits = teacher.head(teacher.backbone.forward_features(torch.cat(global_views))["cls"])
        return logits.view(len(global_views), -1, logits.shape[-1])

    def dino_stats(self, teacher_logits: torch.Tensor, student_embed: torch.Tensor) -> dict[str, Any]:
        """Collapse diagnostics: the trainer's guard watches ``stat/embedding_std`` (student, global crop 1);
        a teacher entropy near log(K) means collapse to uniform, near 0 collapse to one dimension."""
        probs = self.loss_fn.teacher_probs(teacher_logits.flatten(0, 1))
        return {
            "stat/embedding_std": embedding_std(student_embed),
            "stat/teacher_entropy": entropy(probs).detach(),
            # on the device like the other terms (a copy of the loss's buffer): the trainer stacks them all
            "stat/teacher_temp": self.loss_fn.temperature.clone(),
        }

    def sync_schedules(self) -> None:
        """Give the loss the persisted warm-up length (set by ``advance_schedules``, or loaded)."""
        self.loss_fn.set_warmup_steps(self.schedule_value("temp_warmup_steps"))

    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        all_views = list(views["global"]) + list(views["local"])
        cls = torch.cat(self.student_cls(all_views))  # (views x B, D), view by view
        logits, embedding = self.head_logits(cls)
        student = logits.view(len(all_views), -1, logits.shape[-1])
        teacher_logits = self.teacher_outputs(list(views["global"]))
        loss = self.loss_fn(student, teacher_logits)
        first_view = embedding[:student.shape[1]]
        return {"loss": loss, "loss/dino": loss.detach(), **self.dino_stats(teacher_logits, first_view)}

    def on_after_step(self, step: int, total_steps: int) -> None:
        self.teacher.update(HeadedEncoder(self.backbone, self.head), step, total_steps)
        self.advance_schedules(step, total_steps)

    def advance_schedules(self, step: int, total_steps: int) -> None:
        """Teacher-temperature warm-up (a fraction of all steps) and the frozen-last-layer window."""
        fraction = float(self.config["teacher_temp_warmup_fraction"])
        if fraction > 0:
            self._set_schedule("temp_warmup_steps", max(1, round(fraction * total_steps)))
        self.sync_schedules()
        if float(self.config["freeze_last_layer_fraction"]) > 0:
            frozen = max(1, round(float(self.config["freeze_last_layer_fraction"]) * total_steps))
            self._set_schedule("freeze_steps", frozen)
        self.loss_fn.set_step(step)
        self._set_schedule("step", step)
