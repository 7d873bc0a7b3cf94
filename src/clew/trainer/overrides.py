"""The config tree before validation: presets, deep merges and dotted overrides (plain dicts from YAML).

``clew.trainer.config.load_config`` applies them in order: the overrides onto the file's tree, then the tree onto
the preset it names (``preset:``, a YAML fragment in ``clew/presets``).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import yaml


def preset_names() -> list[str]:
    folder = resources.files("clew") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    path = resources.files("clew") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text()) or {}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


NAMED = (("credit",), ("objective",), ("rollout", "context"))  # {name, params} blocks


def apply_override(tree: dict[str, Any], item: str) -> dict[str, Any]:
    """``"credit.params.gamma=0.9"`` sets a nested key (value parsed as YAML).

    A named component (``credit``, ``objective``, ``rollout.context``) whose ``name`` changes loses its
    old ``params``, as with presets: one component's parameters never leak into another's.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} must look like dotted.key=value")
    parts = key.split(".")
    value: Any = yaml.safe_load(raw)
    for part in reversed(parts):
        value = {part: value}
    for path in NAMED:
        old, new = _lookup(tree, path), _lookup(value, path)
        if (
            isinstance(old, dict)
            and isinstance(new, dict)
            and "name" in old
            and new.get("name", old["name"]) != old["name"]
        ):
            tree = _replace(tree, path, {k: v for k, v in old.items() if k != "params"})
    return deep_merge(tree, value)


def _lookup(tree: Any, path: Sequence[str]) -> Any:
    for part in path:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _replace(tree: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with the block at ``path`` replaced by ``value``."""
    head, *rest = path
    return {**tree, head: _replace(tree[head], rest, value) if rest else value}


def without_foreign_params(preset: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Drop a preset's ``credit``/``objective`` params when the user picks a different name there:
    ``preset=gigpo credit.name=grpo`` must not hand GiGPO's ``gamma`` to GRPO."""
    out = dict(preset)
    for section in ("credit", "objective"):
        mine, theirs = user.get(section) or {}, preset.get(section) or {}
        if "name" in mine and mine["name"] != theirs.get("name"):
            out[section] = {k: v for k, v in theirs.items() if k != "params"}
    return out
