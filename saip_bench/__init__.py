"""saip-bench: pretraining and benchmarking lightweight human-centric vision models."""

from saip_bench._compat.torchvision_cpu import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
