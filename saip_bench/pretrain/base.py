"""The contract between the one trainer and every pretraining method (SAIP and baselines).

A method is a small ``nn.Module``: it owns its student backbone, heads, teacher (if any) and losses.
The trainer owns optimisation (AdamW, LR/WD schedules, accumulation, AMP, clipping), checkpoints,
resume, DDP and progress. Methods never step optimisers or touch the data loader.

Life of one micro-batch (see ``trainer.py``)::

    views = method.make_views(batch, generator)   # batched tensor ops, no grad, on the batch's device
    out = ddp_or_method(views)                      # -> {"loss": total, "loss/<term>": ..., "stat/<x>": ...}
    out["loss"].backward()
    ... optimiser step ...
    method.on_after_step(global_step, total_steps)  # e.g. EMA teacher update (global step, never per epoch)

Configuration: the preset files ``presets/<method>.yaml`` hold, per preset name (``quick``, ``paper``...),
a ``method:`` mapping passed verbatim as ``config`` and optional ``train:`` overrides of the trainer
defaults in ``presets/_trainer.yaml``. Validate ``config`` in ``__init__`` (raise ``SpecError``).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.errors import SpecError
from saip_bench.registry import Registry

METHODS: Registry[type[PretrainMethod]] = Registry("method")


class PretrainMethod(nn.Module, metaclass=ABCMeta):
    """Subclass, set the class attributes, and register with ``@METHODS.register(name, ...)``.

    Batches from the pretraining loader are dicts of tensors on the training device:

    - ``image`` (B, 3, H, W) float32 in [0, 1] at the preset's ``source_size`` (person crops resized);
    - ``index`` (B,) int64 global dataset indices; ``sample_seed`` (B,) int64, a per-sample seed that
      depends only on (run seed, epoch, index): draw per-sample view parameters from it
      (``views.sample_rngs``) and the views are identical whatever the world size (exact DDP parity);
    - ``step_seed`` () int64, the same on every rank for one micro-step: for per-batch draws (e.g. one
      rescale factor for the whole batch) that must agree across ranks;
    - when the method asks for them: ``background`` (B, 3, Hb, Wb) float in [0, 1] (random background
      images, ``needs_backgrounds``), ``label`` (B,) int64 identity ids (``needs_labels``; the identity
      folder name, ids dense from 0 in sorted folder order), ``keypoints`` (B, 17, 3) in ``source_size``
      pixels, visibility 0 where unknown (``needs_keypoints``).

    ``forward`` returns a dict: ``loss`` (scalar, back-propagated), every term as ``loss/<term>``
    (logged), optional diagnostics as ``stat/<name>`` (logged, no grad). The trainer's collapse guard
    watches ``stat/embedding_std`` when present: the std over the batch of the L2-normalised
    embeddings (mean over dims); a value below ``guard.min_embedding_std`` for ``guard.patience``
    steps stops training.
    """

    name: ClassVar[str] = ""
    supported_families: ClassVar[frozenset[str]] = frozenset({"vit", "hybrid", "convnet"})
    needs_labels: ClassVar[bool] = False
    needs_keypoints: ClassVar[bool] = False
    needs_backgrounds: ClassVar[bool] = False
    # DDP: set True when some trainable parameters get no gradient in a step (e.g. switched-off heads).
    find_unused_parameters: ClassVar[bool] = False
    # The config keys a dict-configured method reads; any other key is a SpecError (a typo in a preset or
    # an override must not pass silently). None: the method validates its config itself (SAIP: pydantic).
    config_keys: ClassVar[frozenset[str] | None] = None
    # The views whose dimensions change from step to step ({view key: dims}), e.g. a per-batch rescale: a
    # compiled step (``compile: step``) traces them as dynamic from its first step instead of recompiling.
    dynamic_view_dims: ClassVar[dict[str, tuple[int, ...]]] = {}

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = dict(config)
        known = type(self).config_keys
        unknown = sorted(set(self.config) - known) if known is not None else []
        if unknown:
            raise SpecError(
                f"method {self.name!r}: unknown config key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known or ()))}"
            )

    @classmethod
    def unsupported_reason(cls, backbone: Backbone, config: dict[str, Any]) -> str | None:
        """``None`` when the method can train ``backbone`` with ``config``; else a one-line reason."""
        if backbone.family not in cls.supported_families:
            families = ", ".join(sorted(cls.supported_families))
            return (
                f"method {cls.name!r} does not support backbone {backbone.name!r} "
                f"(family {backbone.family}); supported families: {families}"
            )
        return None

    @classmethod
    def prepare_config(cls, config: dict[str, Any], data_dir: Any) -> dict[str, Any]:
        """Settings a method derives from its data before it is built (e.g. Supervised's class count)."""
        return dict(config)

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        """Batched view generation on the batch's device (crops, masks, canvases); runs under no_grad.

        ``generator`` is a CPU generator seeded from (run seed, global step, micro-step, rank): use it
        for draws that may differ between ranks; use ``batch["sample_seed"]`` for per-sample draws.
        """
        return batch

    @abstractmethod
    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Return the loss terms; key ``loss`` is the total that is back-propagated."""

    def on_after_step(self, step: int, total_steps: int) -> None:
        """Hook after each optimiser step (EMA teacher update etc.); ``step`` is the global step (1-based)."""

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names excluded from weight decay besides biases and norms (1-D params)."""
        return set()

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def export_backbone(self) -> Backbone:
        """The backbone whose weights downstream tasks start from (student by default)."""
        return self.backbone

    def hyperparameters(self) -> dict[str, Any]:
        """Recorded in the checkpoint sidecar."""
        return dict(self.config)
