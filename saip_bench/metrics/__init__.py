"""Official metrics as pure functions of arrays/files, plus their ``saip-bench metric`` commands."""

from saip_bench.metrics.base import METRIC_COMMANDS, MetricCommand

__all__ = ["METRIC_COMMANDS", "MetricCommand"]
