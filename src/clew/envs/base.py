"""The Env contract (a Protocol), its step record, and the errors envs raise (and how their failures are typed)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from clew.types import FailureType


class EnvFinishedError(RuntimeError):
    """Raised by ``step`` after the episode has terminated or been truncated."""


class InfraError(Exception):
    """A failure the policy's action cannot cause: raise it (or a subclass) from ``step`` to say so.

    Failures are typed by who can cause them (``Episode.failure``, ``failure_type``). Whatever goes
    wrong while the env processes an action (an exception from ``step``, a step past
    ``rollout.env_step_timeout_s``, the env's worker process crashing) is ``policy`` by default: an
    action can crash or hang a game, so the episode stays in credit and in its group's baseline,
    scored as a failure, its last turn penalised as an invalid action. Failures outside a step
    (building the env, ``reset``, a worker that cannot start, a lost host, a worker killed from
    outside) are ``infra``: left out of credit and baselines.

    An adapter that knows a step failure cannot come from the action (its judge service is down, a
    licence server is unreachable) raises an ``InfraError``, wrapping the cause, or a subclass that
    also derives from the built-in type its callers expect::

        try:
            verdict = self.judge.score(answer)
        except ConnectionError as exc:  # the judge is unreachable: not the answer's doing
            raise InfraError(f"judge unreachable: {exc}") from exc

        class JudgeDown(InfraError, ConnectionError): ...

    Leave failures an answer can provoke (a verifier timing out on a pathological answer, a parser
    crashing on malformed input) as ordinary exceptions: they are the policy's. Exceptions keep their
    type across worker processes and Ray hosts (``clew.envs.pool``, ``clew.envs.remote``), so the
    declaration holds wherever the env runs.
    """


def failure_type(exc: BaseException, *, in_step: bool) -> FailureType:
    """``policy`` for a failure while the env processed an action (``in_step``) unless it is an
    ``InfraError``; ``infra`` for every other failure (see ``InfraError``)."""
    return "policy" if in_step and not isinstance(exc, InfraError) else "infra"


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
    ``HasValidActions``, ``HasGoldReply``, ``HasSnapshot``, ``Closeable`` (checked with ``isinstance``, never
    ``hasattr``).

    ``step`` may raise: the rollout records the episode as failed, charged to the policy unless the
    exception is an ``InfraError`` (see there); a failing ``reset`` is always infra.
    """

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
class HasGoldReply(Protocol):
    """An env whose task has a known answer: ``gold_reply()`` is the reply that answers it correctly, in the
    env's own answer syntax (``"answer: 42"``), or None when this task has none. Read once after ``reset``;
    estimators that score the policy's belief in the answer (IGPO) teacher-force it after each turn's prompt."""

    def gold_reply(self) -> str | None: ...


@runtime_checkable
class HasSnapshot(Protocol):
    """An env that can save and restore its whole state: ``restore(snapshot())`` on any instance built with the
    same id and kwargs puts it exactly where the snapshot was taken, so the same actions give the same steps
    (branched rollouts restore instead of replaying a prefix; ``clew check-env`` verifies it). Snapshots are the
    env's own bytes: restore only what this env wrote."""

    def snapshot(self) -> bytes: ...

    def restore(self, state: bytes) -> None: ...


class PickledSnapshot:
    """``snapshot``/``restore`` for an env whose whole state is its plain-Python attributes (pickled)."""

    def snapshot(self) -> bytes:
        return pickle.dumps(self.__dict__)

    def restore(self, state: bytes) -> None:
        self.__dict__.clear()
        self.__dict__.update(pickle.loads(state))


@runtime_checkable
class HasSeats(Protocol):
    """A game whose seats all act through the env (self-play: the policy plays every seat).

    ``seats()`` is how many seats act through ``step`` (1: the env plays the others itself, an ordinary env).
    With more, ``to_act()`` names the seat whose move the next ``step`` plays (the same seat again after an
    invalid move, where the game says so); ``reset`` and every ``step`` that does not end the game return that
    seat's view (the messages it has not seen yet: the others' moves, its board); the ending step's observation
    is the final message every seat reads. ``verdicts()`` is each seat's outcome from its own side once the game
    ended (a zero-sum game: ``[1.0, -1.0]``; 0 for every seat when it ran out of turns). The rollout gives each
    seat its own episode, context and group (``clew.rollout.loop``).
    """

    def seats(self) -> int: ...

    def to_act(self) -> int: ...

    def verdicts(self) -> list[float]: ...


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
