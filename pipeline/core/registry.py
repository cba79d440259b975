"""A name -> object registry, so params select implementations without if/else chains."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pipeline.core.errors import PipelineError, quoted

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names used in params.yaml to implementations.

    An unknown name raises a PipelineError (a ValueError) that lists every valid name, so a typo in
    `dvc exp run -S noise=gausian` is answered with the fix, not a KeyError.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        valid = ", ".join(sorted(self._items))
        if not isinstance(name, str):  # `method: [lincir]`: a list is no name (and unhashable)
            raise PipelineError(f"a {self.kind} is one name ({valid}), not {quoted(name)}")
        try:
            return self._items[name]
        except KeyError:
            raise PipelineError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and name in self._items
