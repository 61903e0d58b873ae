"""saip-bench: pretraining and benchmarking lightweight human-centric vision models."""

from saip_bench._compat import install_torchvision_hook

install_torchvision_hook()  # the CPU torchvision fix, applied when torchvision is first imported

__version__ = "0.1.0"
