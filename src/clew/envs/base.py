"""The Env contract (a Protocol), its step record, and the error raised when stepping a finished env."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class EnvFinishedError(RuntimeError):
    """Raised by ``step`` after the episode has terminated or been truncated."""


@dataclass(frozen=True)
class StepResult:
    """What the environment answers to one action (Gymnasium's terminated/truncated split).

    ``reward`` is this step's reward. ``outcome`` is an explicit episode outcome, apart from the
    step rewards (a verifier's verdict, G-RA's r^high): an env that reports one sets it on the step
    that ends the episode, and the episode's outcome is then that value rather than the sum of
    step rewards. ``info["success"]`` (bool), when present, is the env's own success verdict.
    """

    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)
    outcome: float | None = None


@runtime_checkable
class Env(Protocol):
    """A text environment. Optional methods: ``state_key``, ``expert_action``, ``valid_actions``."""

    def reset(self, seed: int) -> str: ...

    def step(self, action: str) -> StepResult: ...


@runtime_checkable
class HasStateKey(Protocol):
    """An env that can name its canonical state (GiGPO's anchor states, step-level grouping)."""

    def state_key(self) -> str | None: ...


def ensure_running(finished: bool, env_name: str) -> None:
    """Raise a clear error when an env is stepped after its episode ended."""
    if finished:
        raise EnvFinishedError(f"{env_name}.step() called after the episode ended; call reset(seed) to start a new one")


def normalize_action(action: str) -> str:
    """Lower-case, trim and collapse whitespace; models often add stray spaces or newlines."""
    return " ".join(action.strip().lower().split())
