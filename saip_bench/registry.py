"""One small name -> factory registry, used for backbones, methods, tasks, datasets and metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from saip_bench.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories) with metadata.

    Why: one place to look up every pluggable thing, one friendly error for unknown names,
    and tests parametrised over ``names()``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, obj: T | None = None, **meta: Any) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            self._meta[name] = dict(meta)
            return item

        if obj is None:
            return _add
        return _add(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UserError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not callable")
        return factory(*args, **kwargs)  # type: ignore[operator]


def lazy_loader(modules: list[str]) -> Callable[[], None]:
    """Return a function that imports ``modules`` once, so registries fill on first use."""
    state = {"done": False}

    def load() -> None:
        if state["done"]:
            return
        import importlib

        for module in modules:
            importlib.import_module(module)
        state["done"] = True

    return load
