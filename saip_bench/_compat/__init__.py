"""Small, contained work-arounds for the installed stack (see each module's docstring).

``install_torchvision_hook`` is called by ``import saip_bench``: the torchvision fix runs when something
first imports torchvision (timm does), not at ``import saip_bench``, so commands that never touch torch
(``saip-bench --help``, ``list``) do not pay the ~2 s torch/torchvision import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any


class _ThenRouteNms(importlib.abc.Loader):
    """Runs torchvision's own loader, then points its Python ``nms`` at the CPU kernel."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        from saip_bench._compat.torchvision_cpu import route_python_nms_to_cpu_kernel

        route_python_nms_to_cpu_kernel()


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """On the first ``import torchvision``: register the missing operator schemas before its code runs
    (only when its C extension cannot load), then let the normal finder load it."""

    def find_spec(self, name: str, path: Any, target: ModuleType | None = None) -> Any:
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        from saip_bench._compat.torchvision_cpu import register_missing_schemas

        if not register_missing_schemas():
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRouteNms(spec.loader)
        return spec


def install_torchvision_hook() -> None:
    """Arrange the torchvision fix for its first import (at once if it is already imported)."""
    if "torchvision" in sys.modules:
        return  # imported before saip_bench: a working torchvision, or too late to fix (as before)
    if not any(isinstance(finder, _TorchvisionHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionHook())
