"""Registry of versioned env ids with lazy ``"module:Class"`` entry points."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

from clew.envs.base import Env

_ID = re.compile(r"^[a-z][a-z0-9_-]*-v\d+$")


@dataclass(frozen=True)
class EnvSpec:
    """A registered env: versioned id, dotted entry point and default constructor kwargs."""

    env_id: str
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, EnvSpec] = {}


def register(env_id: str, entry_point: str, description: str = "", **kwargs: Any) -> None:
    """Register ``env_id`` (``name-vN``) for ``"module:Class"`` with default kwargs."""
    if not _ID.match(env_id):
        raise ValueError(f"env id {env_id!r} must look like 'name-v0' (lower-case name, version suffix)")
    if ":" not in entry_point:
        raise ValueError(f"entry_point {entry_point!r} must be 'module:Class'")
    _REGISTRY[env_id] = EnvSpec(env_id, entry_point, dict(kwargs), description)


def registered() -> list[EnvSpec]:
    """All registered specs, sorted by id."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def load_entry_point(entry_point: str) -> type:
    """Import ``"module:Class"`` and return the class."""
    module_name, _, attr = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import env module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)  # type: ignore[no-any-return]
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from exc


def make(env_id: str, **kwargs: Any) -> Env:
    """Build an env from a registered id or a ``"module:Class"`` path; kwargs override defaults."""
    if env_id in _REGISTRY:
        spec = _REGISTRY[env_id]
        return load_entry_point(spec.entry_point)(**{**spec.kwargs, **kwargs})  # type: ignore[no-any-return]
    if ":" in env_id:
        return load_entry_point(env_id)(**kwargs)  # type: ignore[no-any-return]
    known = ", ".join(sorted(_REGISTRY))
    raise ValueError(f"unknown env {env_id!r}; registered: {known}; or pass 'module:Class'")


register(
    "keydoor-v0",
    "clew.envs.library.keydoor:KeyDoor",
    description="grid: pick up the key, then open the locked door (horizon set by size)",
)
register(
    "bifurcation-v0",
    "clew.envs.library.bifurcation:Bifurcation",
    description="early branch choice, long irrelevant corridor, outcome fixed by the choice",
)
register(
    "toolcalc-v0",
    "clew.envs.library.toolcalc:ToolCalc",
    description="multi-step arithmetic with a calculator tool, then an answer",
)
