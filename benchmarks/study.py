"""Studies that span sessions: runs cached by the overrides the study gave them, not by the whole config.

The code moves on between sessions: a new config field (with its default) must not throw finished runs
away, so a run is reused when the overrides the study gave it are the same; the commit that trained it is
recorded beside them (``study.json``) and reported, so a study says which code ran which runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from clew.store.run import atomic_write_text
from clew.trainer.config import load_config
from clew.trainer.loop import Trainer


def study_key(run: Path) -> dict[str, Any] | None:
    """The overrides and commit of a finished run (None: not finished, or not a study's run)."""
    key = run / "study.json"
    if not (run / "summary.json").exists() or not key.exists():
        return None
    return dict(json.loads(key.read_text()))


def finished(run: Path, overrides: list[str]) -> bool:
    key = study_key(run)
    return key is not None and key["overrides"] == overrides


def train_run(run: Path, overrides: list[str], threads: int, config: Path | None = None) -> None:
    """Train ``run`` afresh from ``config`` (a YAML file or None) with ``overrides``; records its study key."""
    shutil.rmtree(run, ignore_errors=True)
    Trainer(load_config(config, [*overrides, f"threads={threads}"]), run).fit()
    atomic_write_text(run / "study.json", json.dumps({"overrides": overrides, "commit": commit()}))


def commit() -> str:
    here = Path(__file__).parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here)
    return head.stdout.strip() or "unknown"
