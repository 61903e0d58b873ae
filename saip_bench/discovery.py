"""Fill registries by importing every module of a package once.

Why: a new task, metric or method is one new file; nobody edits a shared list (and merges stay clean).
"""

from __future__ import annotations

import importlib
import pkgutil

_LOADED: set[str] = set()


def import_submodules(package_name: str) -> list[str]:
    """Import all modules (recursively) under ``package_name``; returns their names."""
    if package_name in _LOADED:
        return []
    package = importlib.import_module(package_name)
    names: list[str] = []
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    _LOADED.add(package_name)
    return names
