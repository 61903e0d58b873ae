"""saip-bench: pretraining and benchmarking lightweight human-centric vision models."""

from saip_bench._compat import install_torchvision_hook

install_torchvision_hook()  # the CPU torchvision fix, applied when torchvision is first imported

from saip_bench.logs import install as _install_logging  # noqa: E402

_install_logging()  # diagnostics of the saip_bench.* loggers print on the console, as before (logs.py)

__version__ = "0.1.0"
