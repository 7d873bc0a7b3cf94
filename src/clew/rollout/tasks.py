"""What a rollout is asked for: tasks (env, kwargs, seed) and the stable seeds derived from a run's seed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One task: an env id (or ``module:Class``), its kwargs and the seed every group member uses."""

    env_id: str
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return f"{self.env_id}#{self.seed}"


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (run seed, iteration, episode, turn, ...)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
