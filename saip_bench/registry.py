"""One small name -> factory registry, used for backbones, methods, tasks, datasets and metrics."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from saip_bench.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a known name is close to ``name``, else ``""``: one spelling of the
    hint for every unknown name (registries, specs, presets, plan filters)."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
            raise UserError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; "
                            f"known {self.kind}s: {known}")
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
