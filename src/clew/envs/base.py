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
    """A text environment. Optional extras are the typed protocols below: ``HasStateKey``, ``HasExpert``,
    ``HasValidActions``, ``Closeable`` (checked with ``isinstance``, never ``hasattr``)."""

    def reset(self, seed: int) -> str: ...

    def step(self, action: str) -> StepResult: ...


@runtime_checkable
class HasStateKey(Protocol):
    """An env that can name its canonical state (GiGPO's anchor states, step-level grouping)."""

    def state_key(self) -> str | None: ...


@runtime_checkable
class HasExpert(Protocol):
    """An env with a scripted expert (gold path, walkthrough, known answer): SFT demos, ``--policy expert``."""

    def expert_action(self) -> str: ...


@runtime_checkable
class HasValidActions(Protocol):
    """An env that can list the actions valid now (``--policy random``, noisy-expert demos)."""

    def valid_actions(self) -> list[str]: ...


@runtime_checkable
class Closeable(Protocol):
    """An env holding resources (a JVM, files, a worker process) that ``close()`` releases."""

    def close(self) -> None: ...


def ensure_running(finished: bool, env_name: str) -> None:
    """Raise a clear error when an env is stepped after its episode ended."""
    if finished:
        raise EnvFinishedError(f"{env_name}.step() called after the episode ended; call reset(seed) to start a new one")


def normalize_action(action: str) -> str:
    """Lower-case, trim and collapse whitespace; models often add stray spaces or newlines."""
    return " ".join(action.strip().lower().split())
