"""Downstream tasks: one module per task (head + fit + predict + score), registered in ``TASKS``."""

from saip_bench.tasks.base import TASKS, Task, UnitContext, UnitResult, get_task

__all__ = ["TASKS", "Task", "UnitContext", "UnitResult", "get_task"]
