"""The one name -> spec registry of every extension point (torch-free, layer 0).

A spec is any object with a ``name``; ``ParamRegistry`` holds specs that also have ``fn``, whose keyword-only
arguments are the entry's parameters, so it can reject unknown names and parameters with the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


class Spec(Named, Protocol):
    @property
    def fn(self) -> Callable[..., Any]: ...


N = TypeVar("N", bound=Named)
S = TypeVar("S", bound=Spec)


def keyword_params(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s keyword-only parameters and their defaults."""
    sig = inspect.signature(fn)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


class Registry(Generic[N]):
    """Specs by name, registered where they are defined; ``what`` names the kind in error messages (e.g.
    "engine"). Every extension point keeps its entries in one of these (engines, env ids and families,
    context strategies, credit estimators, objectives)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._specs: dict[str, N] = {}

    def add(self, spec: N) -> None:
        """Add (or replace) ``spec`` under its name."""
        self._specs[spec.name] = spec

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def available(self) -> dict[str, N]:
        return dict(sorted(self._specs.items()))

    def get(self, name: str) -> N:
        if name not in self._specs:
            raise ValueError(f"unknown {self.what} {name!r}; available: {', '.join(self.names())}")
        return self._specs[name]


class ParamRegistry(Registry[S]):
    """A registry of specs built by ``fn(**params)``: it also rejects parameters ``fn`` does not take."""

    def check_params(self, name: str, params: dict[str, Any]) -> None:
        """Fail on parameters the entry does not take, listing the valid ones."""
        valid = keyword_params(self.get(name).fn)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"{self.what} {name!r} has no parameter(s) {unknown}; valid: {sorted(valid)}")
