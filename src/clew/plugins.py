"""Plug-ins: engines, context strategies, credit estimators, objectives and env families from outside clew.

One mechanism for all five kinds. A plug-in is a Python module named by its import path (``my_lab.credit``)
or by a file path (``./my_plugin.py``, ``/abs/path/plugin.py``); importing it registers its entries with the
kinds' register functions, called where each entry is defined:

- engine: ``clew.policy.register_engine(EngineSpec(name, "module:Class", ...))``, capabilities as data;
- context strategy: ``clew.rollout.register_context(name, factory, summary)``;
- credit estimator: the ``@clew.credit.register(name, ...)`` decorator;
- objective: ``clew.objectives.register(name, fn, recommended_aggregation, summary)``;
- env: ``clew.envs.register("name-v0", "module:Class")`` (or ``register_family``); an env class can also be
  named directly as ``module:Class`` without registering.

A run lists its plug-ins in the config (``plugins: [./my_plugin.py]``), loaded before the rest of the config
is validated, so every field may name their entries; the saved ``config.yaml`` keeps the list, so a resumed
run loads them again. The CLI takes ``--plugin PATH_OR_MODULE`` (repeatable, before the command:
``clew --plugin ./my_plugin.py eval ...``) and loads it before building its parser, so choices, ``--help``
listings and error messages include the plug-in's entries. Loading is idempotent (by resolved name).
Torch-free: a plug-in that needs torch imports it itself.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

_LOADED: dict[str, ModuleType] = {}


def load_plugins(names: Iterable[str]) -> list[ModuleType]:
    """Import every plug-in in ``names`` (each once per process); see the module docstring."""
    return [load_plugin(name) for name in names]


def load_plugin(name: str) -> ModuleType:
    """Import one plug-in: a ``.py`` file path or a dotted module name; a failure names the plug-in."""
    is_file = name.endswith(".py") or "/" in name
    key = str(Path(name).resolve()) if is_file else name
    if key in _LOADED:
        return _LOADED[key]
    try:
        module = _from_file(Path(key)) if is_file else importlib.import_module(name)
    except FileNotFoundError:
        raise ValueError(f"plugin {name!r}: no such file") from None
    except Exception as exc:  # the plug-in's own error, named, on one line
        raise ValueError(f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    _LOADED[key] = module
    return module


def _from_file(path: Path) -> ModuleType:
    """Import a file as module ``clew_plugin_<stem>_<hash of its path>`` (stable, so pickles across processes
    name the same module)."""
    if not path.is_file():
        raise FileNotFoundError(path)
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    module_name = f"clew_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def loaded() -> list[str]:
    """The plug-ins loaded in this process, in load order."""
    return list(_LOADED)
