"""Where clew keeps what it builds (torch-free): one root for its caches, set explicitly, never read from the
environment here.

The root is ``~/.cache/clew`` unless set: the CLI sets it from ``$CLEW_CACHE``, else ``$XDG_CACHE_HOME/clew``
(the CLI is the only place in clew that reads environment variables); a Python user calls
``set_cache_root``. Under it: ``models/<name>`` (``clew models get``) and ``textworld`` (generated games).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DEFAULT_ROOT = Path("~/.cache/clew")
_root: Path | None = None


def set_cache_root(path: str | Path | None) -> None:
    """Use ``path`` as the cache root from now on in this process (None: back to ``~/.cache/clew``)."""
    global _root
    _root = None if path is None else Path(path).expanduser()


def cache_root() -> Path:
    return _root if _root is not None else DEFAULT_ROOT.expanduser()


def model_dir(name: str) -> Path:
    """Where ``clew models get NAME`` publishes a registered model."""
    return cache_root() / "models" / name


def textworld_dir() -> Path:
    """Where the TextWorld adapter keeps the games it generates."""
    return cache_root() / "textworld"


def root_from_environment(environ: Mapping[str, str]) -> Path | None:
    """The CLI's rule: ``$CLEW_CACHE``, else ``$XDG_CACHE_HOME/clew``, else None (the default root)."""
    if environ.get("CLEW_CACHE"):
        return Path(environ["CLEW_CACHE"]).expanduser()
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]).expanduser() / "clew"
    return None
