"""SOLIDER (Chen et al., CVPR'23): DINO + token pseudo-labels from clustering + a semantic controller.

What is implemented (checked against the authors' release, tinyvision/SOLIDER ``main_solider.py`` and
``utils.get_mask``; the code here is our own):

- **Semantic pseudo-labels.** The EMA teacher's token features of the two global crops (controller at
  lambda = 1) are split per image into foreground / background by 2-means on the token norms (the
  higher-norm cluster is foreground); images whose foreground covers at most ``min_foreground`` of the
  tokens get no labels. Foreground tokens are clustered into ``parts`` (3) groups by k-means, and the
  groups are numbered 1..parts from top to bottom by their mean row (background = 0).
- **Part-removed view.** For labelled images, one part ``k ~ U{1..parts}`` (drawn per sample here; the
  release draws one per GPU per step, docs/baselines.md) is blanked out of the global crop (pixels set to
  the normalisation mean); the student must still predict every token's label on it and on the intact
  crop (token classifier = a 3-layer DINO-style head with ``parts + 1`` outputs, cross-entropy).
- **Semantic controller.** Each sample gets lambda in {0, 1} (one-hot ``[lambda, 1 - lambda]``), shared by
  teacher and student; the controller modulates features as ``x * softplus(W l) + B l``; the semantic
  loss of a sample is weighted by its lambda, so lambda = 0 features carry appearance only.
- **DINO** on the 2 global + N local crops (``dino.py``), with the controller applied before the head.

Deviation (documented): the release modulates the features after *every* Swin stage; here the controller
acts once, on the backbone's output tokens, so the exported backbone is a plain timm model (downstream
heads then learn any per-channel affine themselves) and every backbone family is supported. The release
clusters with scikit-learn's k-means++ (random restarts); here batched Lloyd iterations start from the
foreground split into row bands (deterministic and cheap on GPU).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.devices import host_to_device
from saip_bench.errors import SpecError
from saip_bench.pretrain.base import METHODS
from saip_bench.pretrain.components.dino import DINOHead
from saip_bench.pretrain.components.ema import EMATeacher
from saip_bench.pretrain.methods._common import batch_rngs
from saip_bench.pretrain.methods.dino import DINO

SOLIDER_DEFAULTS: dict[str, Any] = {
    "parts": 3,
    "semantic_weight": 1.0,
    "semantic_hidden_dim": 2048,
    "semantic_bottleneck_dim": 256,
    "semantic_head_layers": 3,
    "min_foreground": 0.5,
    "kmeans_iters": 10,
    "lambda_one_probability": 0.5,
}


class SemanticController(nn.Module):
    """Feature-wise modulation by ``l = [lambda, 1 - lambda]``: ``x * softplus(W l) + B l``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Linear(2, dim)
        self.shift = nn.Linear(2, dim)
        for layer in (self.scale, self.shift):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        """``features`` (B, ..., C); ``semantic`` (B, 2)."""
        shape = (features.shape[0],) + (1,) * (features.ndim - 2) + (features.shape[-1],)
        scale = F.softplus(self.scale(semantic.to(features.dtype))).view(shape)
        shift = self.shift(semantic.to(features.dtype)).view(shape)
        return features * scale + shift


def semantic_weight(lam: torch.Tensor) -> torch.Tensor:
    """(B,) lambdas -> (B, 2) controller input ``[lambda, 1 - lambda]``."""
    lam = lam.float().view(-1, 1)
    return torch.cat([lam, 1.0 - lam], dim=1)


def kmeans(
    x: torch.Tensor, valid: torch.Tensor, centres: torch.Tensor, iters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd iterations: ``x`` (B, N, D), ``valid`` (B, N), ``centres`` (B, K, D) initial.

    Invalid points are ignored; a cluster that empties keeps its previous centre. Returns labels (B, N)
    and centres.
    """
    x = x.float()
    centres = centres.float()
    weight = valid.float().unsqueeze(-1)
    labels = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
    for _ in range(max(1, iters)):
        labels = torch.cdist(x, centres).argmin(dim=-1)
        onehot = F.one_hot(labels, centres.shape[1]).float() * weight  # (B, N, K)
        count = onehot.sum(dim=1)  # (B, K)
        sums = onehot.transpose(1, 2) @ x  # (B, K, D)
        centres = torch.where(count.unsqueeze(-1) > 0, sums / count.clamp_min(1).unsqueeze(-1), centres)
    labels = torch.cdist(x, centres).argmin(dim=-1)
    return labels, centres


@torch.no_grad()
def semantic_part_labels(
    tokens: torch.Tensor, grid: tuple[int, int], parts: int = 3, min_foreground: float = 0.5, iters: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """SOLIDER pseudo-labels of token features ``tokens`` (B, N = h*w, D) in raster order.

    Returns labels (B, N): 0 background, 1..parts foreground parts ordered top to bottom, and
    ``labelled`` (B,) True where the foreground covers more than ``min_foreground`` of the tokens.
    """
    batch, length, _ = tokens.shape
    height, width = grid
    if length != height * width:
        raise ValueError(f"{length} tokens do not form a {height}x{width} grid")
    tokens = tokens.float()
    everything = torch.ones(batch, length, dtype=torch.bool, device=tokens.device)
    norms = tokens.norm(dim=-1, keepdim=True)  # (B, N, 1)
    init = torch.stack([norms.amin(dim=1), norms.amax(dim=1)], dim=1)  # (B, 2, 1)
    fg_labels, fg_centres = kmeans(norms, everything, init, iters)
    high = fg_centres[..., 0].argmax(dim=1, keepdim=True)  # the higher-norm centre is foreground
    foreground = fg_labels == high
    labelled = foreground.sum(dim=1) > min_foreground * length

    rows = torch.arange(length, device=tokens.device) // width  # row of each token
    # initial centres: foreground tokens split into `parts` bands of equal size by raster (row) order
    order_key = torch.where(foreground, torch.arange(length, device=tokens.device), length + 1)
    rank = torch.argsort(torch.argsort(order_key, dim=1), dim=1)  # position among sorted keys
    n_fg = foreground.sum(dim=1, keepdim=True).clamp_min(1)
    band = torch.clamp(rank * parts // n_fg, max=parts - 1)
    band_onehot = F.one_hot(band, parts).float() * foreground.unsqueeze(-1).float()
    band_count = band_onehot.sum(dim=1)
    fg_mean = (tokens * foreground.unsqueeze(-1)).sum(dim=1) / n_fg  # (B, D)
    centres = (band_onehot.transpose(1, 2) @ tokens) / band_count.clamp_min(1).unsqueeze(-1)
    centres = torch.where(band_count.unsqueeze(-1) > 0, centres, fg_mean.unsqueeze(1))
    part_labels, _ = kmeans(tokens, foreground, centres, iters)

    # order parts top to bottom by mean row (empty parts last)
    onehot = F.one_hot(part_labels, parts).float() * foreground.unsqueeze(-1).float()
    count = onehot.sum(dim=1)
    mean_row = (onehot * rows.view(1, -1, 1).float()).sum(dim=1) / count.clamp_min(1)
    mean_row = torch.where(count > 0, mean_row, torch.full_like(mean_row, float(height + 1)))
    rank_of_part = torch.argsort(torch.argsort(mean_row, dim=1), dim=1)  # (B, K): 0 = topmost
    ordered = torch.gather(rank_of_part, 1, part_labels) + 1
    labels = torch.where(foreground, ordered, torch.zeros_like(ordered))
    return labels, labelled


class ControlledEncoder(nn.Module):
    """Backbone + controller + DINO head: the part of SOLIDER that has an EMA teacher."""

    def __init__(self, backbone: Backbone, controller: SemanticController, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.controller = controller
        self.head = head


@METHODS.register("solider", paper="Chen et al., CVPR 2023")
class SOLIDER(DINO):
    """SOLIDER: DINO + token pseudo-labels from clustering + semantic controller lambda (every family)."""

    name: ClassVar[str] = "solider"
    config_keys: ClassVar[frozenset[str]] = DINO.config_keys | frozenset(SOLIDER_DEFAULTS)
    find_unused_parameters: ClassVar[bool] = True  # no labelled image in a step -> no semantic-head grad

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, {**SOLIDER_DEFAULTS, **config})
        cfg = self.config
        if int(cfg["parts"]) < 1:
            raise SpecError("solider parts must be >= 1")
        if not 0.0 <= float(cfg["lambda_one_probability"]) <= 1.0:
            raise SpecError("solider lambda_one_probability must be in [0, 1]")
        self.controller = SemanticController(backbone.num_features)
        self.semantic_head = DINOHead(
            backbone.num_features, int(cfg["parts"]) + 1, int(cfg["semantic_hidden_dim"]),
            int(cfg["semantic_bottleneck_dim"]), int(cfg["semantic_head_layers"]),
        )
        # the DINO teacher built by the parent has no controller: replace it
        self.teacher = EMATeacher(
            ControlledEncoder(backbone, self.controller, self.head),
            float(cfg["momentum_base"]), float(cfg["momentum_final"]),
        )

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        images = batch["image"]
        rngs = batch_rngs(batch, generator)
        views: dict[str, Any] = {
            "global": self.global_views(images, rngs),
            "local": self.local_views(images, rngs),
        }
        p_one = float(self.config["lambda_one_probability"])
        device = batch["image"].device
        views["lambda"] = host_to_device(torch.tensor([float(rng.random() < p_one) for rng in rngs]), device)
        parts = int(self.config["parts"])
        removed = torch.tensor([int(rng.integers(1, parts + 1)) for rng in rngs])
        views["removed_part"] = host_to_device(removed, device)
        return views

    @staticmethod
    def _features(
        backbone: Backbone, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        feats = backbone.forward_features(images)
        return feats["cls"], feats["tokens"], (int(feats["fmap"].shape[-2]), int(feats["fmap"].shape[-1]))

    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.config
        globals_ = list(views["global"])
        n_global = len(globals_)
        batch = globals_[0].shape[0]
        lam = views["lambda"].repeat(n_global)  # (T*B,), same lambda for a sample's views
        sem = semantic_weight(lam)

        teacher = self.teacher.module
        with torch.no_grad():
            t_cls, t_tokens, grid = self._features(teacher.backbone, torch.cat(globals_))
            t_tokens_sem = teacher.controller(t_tokens, semantic_weight(torch.ones_like(lam)))
            labels, labelled = semantic_part_labels(
                t_tokens_sem, grid, int(cfg["parts"]), float(cfg["min_foreground"]), int(cfg["kmeans_iters"])
            )
            t_embed = teacher.head.embed(teacher.controller(t_cls, sem))
            t_logits = F.linear(t_embed, F.normalize(teacher.head.last_layer.weight, dim=1))
            t_logits = t_logits.view(n_global, batch, -1)
            # the part-removed copies of the labelled global crops
            images = torch.cat(globals_)
            removed_part = views["removed_part"].repeat(n_global).view(-1, 1)
            keep = (labels != removed_part).float().view(-1, 1, *grid)
            keep = F.interpolate(keep, size=images.shape[-2:], mode="nearest")
            # the labelled crops' rows, found once: the step's one data-dependent shape (SOLIDER trains the
            # semantic head on labelled crops only); every selection below reuses them
            rows = labelled.nonzero().squeeze(1)
            removed = (images * keep).index_select(0, rows)

        n_removed = int(removed.shape[0])
        s_cls_g, s_tokens_g, _ = self._features(self.backbone, torch.cat([removed, images]))
        local_cls = self.student_cls(list(views["local"])) if views["local"] else []
        global_cls = s_cls_g[n_removed:]
        n_local = len(local_cls)
        lam_all = torch.cat([lam, views["lambda"].repeat(n_local)]) if n_local else lam
        cls_all = torch.cat([global_cls, *local_cls]) if n_local else global_cls
        controlled = self.controller(cls_all, semantic_weight(lam_all))
        logits_all, embedding = self.head_logits(controlled)  # every view's rows in one call
        student = logits_all.view(n_global + n_local, -1, logits_all.shape[-1])
        loss_dino = self.loss_fn(student, t_logits)

        # semantic token classification on the removed copies and the intact labelled crops
        sem_lam = torch.cat([lam.index_select(0, rows), lam.index_select(0, rows)])
        sem_tokens = torch.cat([s_tokens_g[:n_removed], s_tokens_g[n_removed:].index_select(0, rows)])
        sem_labels = torch.cat([labels.index_select(0, rows), labels.index_select(0, rows)])
        if n_removed > 0:
            logits = self.semantic_head(self.controller(sem_tokens, semantic_weight(sem_lam)))
            ce = F.cross_entropy(logits.flatten(0, 1).float(), sem_labels.flatten(), reduction="none")
            weights = sem_lam.view(-1, 1).expand_as(sem_labels).flatten()
            loss_sem = (weights * ce).mean()
            accuracy = (logits.argmax(-1) == sem_labels).float().mean().detach()
        else:
            loss_sem = sum(p.sum() for p in self.semantic_head.parameters()) * 0.0
            accuracy = torch.zeros(())
        loss = loss_dino + float(cfg["semantic_weight"]) * loss_sem
        return {
            "loss": loss,
            "loss/dino": loss_dino.detach(),
            "loss/semantic": loss_sem.detach(),
            **self.dino_stats(t_logits, embedding[:student.shape[1]]),
            "stat/labelled_fraction": labelled.float().mean(),
            "stat/semantic_accuracy": accuracy,
        }

    def on_after_step(self, step: int, total_steps: int) -> None:
        self.teacher.update(ControlledEncoder(self.backbone, self.controller, self.head), step, total_steps)
        self.advance_schedules(step, total_steps)
