"""Registry of ``saip-bench metric <name>`` commands; each metric module registers its own."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saip_bench.registry import Registry


@dataclass(frozen=True)
class MetricCommand:
    """``add_arguments`` fills the sub-parser; ``compute`` returns the metrics dict for the args."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    compute: Callable[[argparse.Namespace], dict[str, Any]]
    main_metric: str


METRIC_COMMANDS: Registry[MetricCommand] = Registry("metric")


def register_metric_command(command: MetricCommand) -> MetricCommand:
    METRIC_COMMANDS.register(command.name, command, help=command.help, main=command.main_metric)
    return command
