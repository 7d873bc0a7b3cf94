"""What a rollout is asked for: tasks (env, kwargs, seed) and the stable seeds derived from a run's seed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clew.types import Turn


@dataclass(frozen=True)
class Task:
    """One task: an env id (or ``module:Class``), its kwargs and the seed every group member uses.

    ``prefix``: turns of an earlier episode of this task to replay after the reset before the policy acts (a
    branch from that episode's state, for deterministic envs: SPO's Monte-Carlo values); every member starts
    there, the replayed turns are the first of its episode, and a replay whose observations differ from the
    recorded ones fails that episode as ``infra``.
    """

    env_id: str
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    prefix: tuple[Turn, ...] = ()

    @property
    def task_id(self) -> str:
        return f"{self.env_id}#{self.seed}"


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (run seed, iteration, episode, turn, ...)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
