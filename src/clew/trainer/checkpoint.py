"""Checkpoints: policy (safetensors via save_pretrained), optimizer, RNG, counters - written atomically."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clew.store.run import CHECKPOINTS, atomic_dir, checkpoints, publish_dir
from clew.tensors import TokenRow

PROBE_FILE = "guard_probe.json"


@dataclass(frozen=True)
class TrainerState:
    """Counters restored on resume."""

    iteration: int  # iterations completed
    optimizer_steps: int
    env_steps: int
    curriculum: dict[str, Any] | None = None  # ``clew.trainer.curriculum.CurriculumState`` as JSON (None: none yet)


def save_checkpoint(
    run_dir: Path, state: TrainerState, model: Any, tokenizer: Any, optimizer: Any, keep: int,
    probe: Sequence[TokenRow] | None = None, save_extra: Callable[[Path], None] | None = None,
) -> Path:  # fmt: skip
    """Write ``checkpoints/iter_XXXXXX`` in a temp folder and rename it into place; prune old ones. ``probe``: the
    step guard's probe rows, held back once per run, so that a resumed run probes (and trains on) the same rows.
    ``save_extra(folder)`` writes what else the run trains (a value head) into the checkpoint folder."""
    final = Path(run_dir) / CHECKPOINTS / f"iter_{state.iteration:06d}"
    tmp = atomic_dir(final)
    model.save_pretrained(tmp / "policy")
    tokenizer.save_pretrained(tmp / "policy")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(
        {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}, tmp / "rng.pt"
    )
    (tmp / "state.json").write_text(json.dumps(state.__dict__))
    if probe:
        (tmp / PROBE_FILE).write_text(json.dumps([dataclasses.asdict(row) for row in probe]))
    if save_extra is not None:
        save_extra(tmp)
    publish_dir(tmp, final)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def load_state(ckpt: Path, optimizer: Any) -> TrainerState:
    """Restore the optimizer and global RNGs from ``ckpt``; return the counters."""
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    rng = torch.load(ckpt / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    return TrainerState(**json.loads((ckpt / "state.json").read_text()))


def saved_iteration(ckpt: Path) -> int:
    """The iteration a run resumes at from ``ckpt`` (its ``state.json``), without restoring anything."""
    return int(json.loads((ckpt / "state.json").read_text())["iteration"])


def load_probe(ckpt: Path) -> list[TokenRow] | None:
    """The step guard's probe rows saved with ``ckpt`` (None: the run had no guard, or it predates this file)."""
    path = ckpt / PROBE_FILE
    if not path.exists():
        return None
    rows = json.loads(path.read_text())
    return [TokenRow.from_dict(r) for r in rows]
