"""timm-backed lightweight backbones behind one interface (see ``base.Backbone``)."""

from saip_bench.backbones.base import BACKBONES, Backbone, count_parameters, create_backbone, flops

__all__ = ["BACKBONES", "Backbone", "count_parameters", "create_backbone", "flops"]
