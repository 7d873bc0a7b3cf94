"""A tiny name -> spec registry shared by the extension points (torch-free, layer 0).

A spec is any object with ``name`` and ``fn``; its parameters are ``fn``'s keyword-only
arguments, so the registry can reject unknown names and parameters with the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar


class Spec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Callable[..., Any]: ...


S = TypeVar("S", bound=Spec)


def keyword_params(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s keyword-only parameters and their defaults."""
    sig = inspect.signature(fn)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


class Registry(Generic[S]):
    """Specs by name; ``what`` names the kind in error messages (e.g. "credit estimator")."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._specs: dict[str, S] = {}

    def add(self, spec: S) -> None:
        self._specs[spec.name] = spec

    def available(self) -> dict[str, S]:
        return dict(sorted(self._specs.items()))

    def get(self, name: str) -> S:
        if name not in self._specs:
            raise ValueError(f"unknown {self.what} {name!r}; available: {', '.join(sorted(self._specs))}")
        return self._specs[name]

    def check_params(self, name: str, params: dict[str, Any]) -> None:
        """Fail on parameters the entry does not take, listing the valid ones."""
        valid = keyword_params(self.get(name).fn)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"{self.what} {name!r} has no parameter(s) {unknown}; valid: {sorted(valid)}")
