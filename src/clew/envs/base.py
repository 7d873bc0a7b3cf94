"""The Env contract (a Protocol), its step record, and the error raised when stepping a finished env."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class EnvFinishedError(RuntimeError):
    """Raised by ``step`` after the episode has terminated or been truncated."""


@dataclass(frozen=True)
class StepResult:
    """What the environment answers to one action (Gymnasium's terminated/truncated split)."""

    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Env(Protocol):
    """A text environment. Optional methods: ``state_key``, ``expert_action``, ``valid_actions``."""

    def reset(self, seed: int) -> str: ...

    def step(self, action: str) -> StepResult: ...


def ensure_running(finished: bool, env_name: str) -> None:
    """Raise a clear error when an env is stepped after its episode ended."""
    if finished:
        raise EnvFinishedError(f"{env_name}.step() called after the episode ended; call reset(seed) to start a new one")


def normalize_action(action: str) -> str:
    """Lower-case, trim and collapse whitespace; models often add stray spaces or newlines."""
    return " ".join(action.strip().lower().split())
