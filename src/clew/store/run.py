"""Run-directory layout and atomic file writes (torch-free, so runs can be read anywhere).

Layout::

    RUN/config.yaml  versions.json  metrics.jsonl  trajectories/iter_000012.parquet
    RUN/checkpoints/iter_000012/{policy/, optimizer.pt, state.json}   (complete ones only)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_dir(final: Path) -> Path:
    """A fresh temp folder beside ``final``; publish it with ``publish_dir``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def publish_dir(tmp: Path, final: Path) -> None:
    """Atomically move a completed temp folder into place (replacing an older one)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def clean_partials(run_dir: Path) -> int:
    """Delete temp files/folders a killed process left behind; return how many were removed."""
    removed = 0
    for tmp in run_dir.rglob(".*.tmp"):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        removed += 1
    return removed


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("iter_") and (p / "state.json").exists())


def latest_policy_dir(run_dir: Path) -> Path | None:
    """The policy folder of the newest checkpoint, or ``RUN/sft/policy`` if only SFT ran."""
    found = checkpoints(run_dir)
    if found:
        return found[-1] / "policy"
    sft = Path(run_dir) / "sft" / "policy"
    return sft if (sft / "config.json").exists() else None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (a line is written whole with one ``write`` call and fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines, skipping a torn last line left by a kill."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
