"""How an episode's steps and budgets end it: its outcome, truncation and failures (shared by ``collect`` and
``play_text``)."""

from __future__ import annotations

import contextlib

from clew.envs import Closeable, Env, StepResult
from clew.envs.pool import EnvWorkerError
from clew.policy.base import Completion
from clew.types import REPLAYED, Episode, FailureType


def env_turns(episode: Episode) -> int:
    """Env actions the rollout took: context edits (summaries) and the replayed prefix of a branch are not."""
    return sum(t.env_step and not t.info.get(REPLAYED) for t in episode.turns)


def apply_step(episode: Episode, result: StepResult, action: Completion) -> None:
    """The episode's side of a step: its outcome, whether it ended, and why."""
    record_outcome(episode, float(result.reward), result.outcome)
    episode.terminated, episode.truncated = result.terminated, result.truncated
    if result.truncated:
        episode.truncation_reason = "env"
    elif not result.terminated and action.finish_reason == "length":
        close(episode, "max_new_tokens")


def record_outcome(episode: Episode, reward: float, reported: float | None) -> None:
    """An env-reported outcome wins; otherwise the outcome is the running sum of step rewards."""
    if reported is not None:
        episode.outcome, episode.outcome_explicit = float(reported), True
    elif not episode.outcome_explicit:
        episode.outcome += reward


def close(episode: Episode, reason: str) -> None:
    if not episode.done:
        episode.truncated, episode.truncation_reason = True, reason


def fail(episode: Episode, exc: Exception, failure: FailureType) -> None:
    """End the episode with ``error`` (a policy failure's turn was flagged when it was built, ``_apply``).

    The failing step gives no reward, so the outcome stays what the episode had earned before it (0 for
    an env that scores only at the end), like an episode cut by a budget; the flag adds the penalty.
    """
    episode.error, episode.failure = ("timeout" if isinstance(exc, TimeoutError) else repr(exc)), failure
    close(episode, "error")


def step_failure(exc: Exception) -> str:
    """Why a step failed: ``timeout`` (past the step timeout), ``crash`` (its worker died) or ``exception``."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "crash" if isinstance(exc, EnvWorkerError) else "exception"


def release(env: Env) -> None:
    """Close an env that holds resources (a JVM, a worker process); a failing close is not the episode's problem."""
    if isinstance(env, Closeable):
        with contextlib.suppress(Exception):  # best effort: the episode is already recorded
            env.close()
