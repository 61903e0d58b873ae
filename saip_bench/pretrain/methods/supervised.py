"""Supervised pretraining on folder labels (``supervised_ids``): identity classification of a labelled
image folder.

Not the paper's "Supervised" baseline, which is an ImageNet-supervised checkpoint: the ``paper`` preset
lists that as an external entry named ``supervised`` (``--checkpoint supervised/vit_tiny=FILE``). This
method has its own name so the two never share a board column; on the synthetic world it is the CPU-size
supervised stand-in of the ``default`` preset.

The pretraining folder's ``images/<identity>/*.jpg`` sub-folders are the classes (ids dense from 0 in
sorted folder order, the loader's ``label``), which is any ImageFolder-style labelled set for users and the
identity labels of the synthetic pretraining pool here. Head: a linear classifier on the backbone's
global token, cross-entropy with label smoothing (0.1 by default). Views: one random resized crop + flip
with the shared colour jitter / grayscale ops (no blur or solarisation; ``colour`` overrides them), at the
backbone's input size.

The number of classes must be known when the head is built, before the trainer scans the folder:
``Supervised.prepare_config(config, data_dir)`` fills ``num_classes`` from the folder (the CLI calls it;
any other caller may pass ``num_classes`` directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from saip_bench.backbones import Backbone
from saip_bench.devices import host_to_device
from saip_bench.errors import DataFormatError, SpecError
from saip_bench.pretrain.base import METHODS, PretrainMethod
from saip_bench.pretrain.methods._common import batch_rngs, crop_views, method_colour_augments
from saip_bench.pretrain.views import ColorAugment, normalize

SUPERVISED_DEFAULTS: dict[str, Any] = {
    "view_size": None,  # None: the backbone's input size
    "crop_scale": [0.4, 1.0],
    "crop_ratio": [0.4, 0.6],
    "label_smoothing": 0.1,
    "num_classes": None,
    # optional "colour": ColorAugment fields overriding SUPERVISED_COLOUR, e.g. {jitter_p: 0, grayscale_p: 0}
    # (left out of the defaults so checkpoints without it keep their config hash)
}

SUPERVISED_COLOUR = ColorAugment(blur_p=0.0, solarize_p=0.0)


def count_identities(data_dir: str | Path) -> int:
    """Number of identity sub-folders of a pretraining root (the classes)."""
    from saip_bench.pretrain.data import PretrainFolder

    folder = PretrainFolder.scan(data_dir)
    if not folder.identities:
        raise DataFormatError(
            folder.root / "images", "images inside identity sub-folders (images/<identity>/*.jpg)",
            "flat files",
        )
    return len(folder.identities)


@METHODS.register("supervised_ids", paper="identity classification of the pool's sub-folders (a stand-in for "
                  "SAIP Fig. 1 'Supervised', an ImageNet checkpoint: external entry `supervised`)")
class Supervised(PretrainMethod):
    """Supervised: identity classification (linear head, label smoothing) on a labelled image folder."""

    name: ClassVar[str] = "supervised_ids"
    needs_labels: ClassVar[bool] = True
    config_keys: ClassVar[frozenset[str]] = frozenset({*SUPERVISED_DEFAULTS, "colour"})

    @classmethod
    def prepare_config(cls, config: dict[str, Any], data_dir: str | Path) -> dict[str, Any]:
        """Fill ``num_classes`` from the folder's identity sub-folders unless already given."""
        if config.get("num_classes"):
            return dict(config)
        return {**config, "num_classes": count_identities(data_dir)}

    def __init__(self, backbone: Backbone, config: dict[str, Any]) -> None:
        super().__init__(backbone, {**SUPERVISED_DEFAULTS, **config})
        num_classes = self.config["num_classes"]
        if not num_classes or int(num_classes) < 2:
            raise SpecError(
                "supervised_ids needs num_classes >= 2 (the number of identity folders; "
                "Supervised.prepare_config(config, data_dir) fills it)"
            )
        if not 0.0 <= float(self.config["label_smoothing"]) < 1.0:
            raise SpecError("supervised_ids label_smoothing must be in [0, 1)")
        size = self.config["view_size"] or backbone.img_size
        self.view_size = (int(size[0]), int(size[1]))
        colour = method_colour_augments("supervised_ids", self.config, {"view": SUPERVISED_COLOUR})
        self.colour = colour["view"]
        self.classifier = nn.Linear(backbone.num_features, int(num_classes))
        nn.init.trunc_normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def make_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        if "label" not in batch:
            raise SpecError("supervised_ids needs identity labels in the batch (images/<identity>/ folders)")
        rngs = batch_rngs(batch, generator)
        cfg = self.config
        labels = batch["label"]  # on the host (data.HOST_KEYS): checked there, then queued to the device
        if int(labels.max()) >= self.classifier.out_features or int(labels.min()) < 0:
            raise SpecError(
                f"label {int(labels.max())} outside 0..{self.classifier.out_features - 1}: "
                "num_classes does not match the identity folders"
            )
        crop = crop_views(batch["image"], rngs, self.view_size, cfg["crop_scale"], cfg["crop_ratio"])
        image = normalize(self.colour.apply(crop, rngs))
        return {"image": image, "label": host_to_device(labels, image.device)}

    def forward(self, views: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = views["label"]
        logits = self.classifier(self.backbone.forward_features(views["image"])["cls"])
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=float(self.config["label_smoothing"]))
        accuracy = (logits.argmax(dim=-1) == labels).float().mean().detach()
        return {"loss": loss, "loss/ce": loss.detach(), "stat/accuracy": accuracy}
