"""Name -> object registries (datasets, models, methods) with closest-name suggestions."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; `register` is a decorator, `get` raises KeyError naming the closest valid name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.kind} {name!r}{suggest(name, self.names())}; allowed: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def registered(self) -> list[str]:
        """Names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def suggest(name: str, options: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or ''."""
    close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
