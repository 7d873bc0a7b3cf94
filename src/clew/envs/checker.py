"""Conformance checker for text envs: types, seeded determinism, replay, termination, outcome, no torch."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from clew.envs.base import Env, EnvFinishedError, HasExpert, HasSnapshot, HasStateKey, HasValidActions, StepResult
from clew.envs.registry import make

GARBAGE_ACTION = "%% not an action %%"


class EnvCheckError(AssertionError):
    """An env broke the contract; the message lists every problem found."""


@dataclass
class EnvReport:
    """What ``check_env`` looked at."""

    env_name: str
    episodes: int = 0
    steps: int = 0
    problems: list[str] = field(default_factory=list)
    snapshots: bool = False  # the env has HasSnapshot and its restores were checked


def check_env(env: Env | str, seeds: tuple[int, ...] = (0, 1, 2), max_steps: int = 400) -> EnvReport:
    """Check an env (instance or registered id) against the contract; raise ``EnvCheckError``.

    For each seed it plays one episode with actions drawn from a seeded mix of the expert, the
    valid actions and a garbage string, then replays the same actions from the same seed and
    compares transcripts, rewards, outcomes and state keys. It checks that stepping after the end
    raises ``EnvFinishedError``, that an explicit ``outcome`` comes only on the ending step and is not
    also paid as step rewards (clew adds it to them, so the return would count it twice), and that
    importing the env's module does not import torch. An env with ``HasSnapshot`` must also restore a
    snapshot taken halfway through the episode, after being reset to another seed, and replay the rest
    of the same actions identically.
    """
    instance = make(env) if isinstance(env, str) else env
    report = EnvReport(type(instance).__name__)
    for seed in seeds:
        _check_seed(instance, seed, max_steps, report)
    _check_no_torch(type(instance).__module__, report)
    if report.problems:
        raise EnvCheckError(f"{report.env_name} failed check_env:\n- " + "\n- ".join(report.problems))
    return report


def _check_seed(env: Env, seed: int, max_steps: int, report: EnvReport) -> None:
    first = env.reset(seed)
    if not isinstance(first, str):
        report.problems.append(f"reset({seed}) returned {type(first).__name__}, expected str")
        return
    if env.reset(seed) != first:
        report.problems.append(f"reset({seed}) is not deterministic: two resets gave different text")
    actions, transcript = _play(env, seed, max_steps, report)
    replay = _replay(env, seed, actions)
    if replay != transcript:
        report.problems.append(f"seed {seed}: replaying the same actions gave a different transcript")
    if isinstance(env, HasSnapshot) and actions:
        _check_snapshot(env, seed, actions, transcript, report)
        report.snapshots = True
    report.episodes += 1
    report.steps += len(actions)


def _play(env: Env, seed: int, max_steps: int, report: EnvReport) -> tuple[list[str], list[Any]]:
    rng = random.Random(seed)
    first = env.reset(seed)
    actions: list[str] = []
    transcript: list[Any] = [first, _state(env)]
    rewards: list[float] = []
    for _ in range(max_steps):
        action = _pick_action(env, rng)
        result = env.step(action)
        _check_result(result, report)
        actions.append(action)
        rewards.append(float(result.reward))
        transcript.append(_row(result, env))
        if result.terminated or result.truncated:
            _check_outcome(result, rewards, seed, report)
            _check_finished(env, report)
            return actions, transcript
        if result.outcome is not None:
            report.problems.append(
                f"seed {seed}: step {len(actions)} reported outcome {result.outcome:g} but did not end the episode; "
                "set StepResult.outcome only on the step that ends it"
            )
    report.problems.append(f"seed {seed}: episode did not end within {max_steps} steps (no truncation?)")
    return actions, transcript


def _replay(env: Env, seed: int, actions: list[str]) -> list[Any]:
    transcript: list[Any] = [env.reset(seed), _state(env)]
    for action in actions:
        transcript.append(_row(env.step(action), env))
    return transcript


def _check_snapshot(env: Env, seed: int, actions: list[str], transcript: list[Any], report: EnvReport) -> None:
    """Snapshot halfway, reset to another seed, restore, and replay the rest: the same rows as the first play."""
    half = len(actions) // 2
    assert isinstance(env, HasSnapshot)
    env.reset(seed)
    for action in actions[:half]:
        env.step(action)
    state = env.snapshot()
    env.reset(seed + 1)
    env.restore(state)
    rest = [_state(env)] + [_row(env.step(action), env) for action in actions[half:]]
    if rest != [transcript[1 + half][-1] if half else transcript[1], *transcript[2 + half :]]:
        report.problems.append(f"seed {seed}: restoring a snapshot taken after {half} steps did not replay the rest")


def _pick_action(env: Env, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return GARBAGE_ACTION
    if roll < 0.6 and isinstance(env, HasExpert):
        return str(env.expert_action())
    if isinstance(env, HasValidActions) and (valid := env.valid_actions()):
        return str(rng.choice(valid))
    return GARBAGE_ACTION


def _row(result: StepResult, env: Env) -> tuple[Any, ...]:
    return (result.observation, result.reward, result.terminated, result.truncated, result.outcome, _state(env))


def _state(env: Env) -> str | None:
    return env.state_key() if isinstance(env, HasStateKey) else None


def _check_result(result: Any, report: EnvReport) -> None:
    if not isinstance(result, StepResult):
        report.problems.append(f"step returned {type(result).__name__}, expected StepResult")
        return
    kinds: list[tuple[str, object, type | tuple[type, ...]]] = [
        ("observation", result.observation, str),
        ("reward", result.reward, (int, float)),
        ("terminated", result.terminated, bool),
        ("truncated", result.truncated, bool),
        ("info", result.info, dict),
        ("outcome", result.outcome, (int, float, type(None))),
    ]
    for name, value, kind in kinds:
        if not isinstance(value, kind):
            report.problems.append(f"StepResult.{name} has type {type(value).__name__}")
    if result.terminated and result.truncated:
        report.problems.append("StepResult is both terminated and truncated")


def _check_outcome(result: StepResult, rewards: list[float], seed: int, report: EnvReport) -> None:
    """Flag an explicit outcome that the step rewards already pay: the return would count it twice.

    clew adds an explicit ``outcome`` to the step rewards on the episode's last turn
    (``clew.credit.functional.rewards_with_outcome``), so a won episode whose ending reward is also
    its outcome of 1 (or whose rewards sum to it) gets a return of 2. A zero outcome doubles nothing.
    """
    outcome = result.outcome
    if outcome is None or outcome == 0:
        return
    total = math.fsum(rewards)
    if math.isclose(rewards[-1], outcome, abs_tol=1e-9):
        found = f"the ending step's reward {rewards[-1]:g} duplicates its explicit outcome {outcome:g}"
    elif math.isclose(total, outcome, abs_tol=1e-9):
        found = f"the step rewards sum to {total:g}, the same as the explicit outcome {outcome:g}"
    else:
        return
    report.problems.append(
        f"seed {seed}: {found}; clew adds an explicit outcome to the step rewards, so the episode's return "
        f"counts the score twice ({total + outcome:g}). Fix: a final verdict goes in StepResult.outcome with "
        "reward 0 on the ending step; a score earned step by step goes in the rewards with outcome None "
        "(the episode's outcome is then their sum)"
    )


def _check_finished(env: Env, report: EnvReport) -> None:
    try:
        env.step(GARBAGE_ACTION)
    except EnvFinishedError:
        return
    except Exception as exc:  # any other error is unclear to the user
        report.problems.append(f"step after the end raised {type(exc).__name__}, expected EnvFinishedError")
        return
    report.problems.append("step after the end did not raise EnvFinishedError")


def _check_no_torch(module: str, report: EnvReport) -> None:
    code = f"import sys, importlib; importlib.import_module({module!r}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        report.problems.append(f"importing {module} failed: {out.stderr.strip()[-200:]}")
    elif out.stdout.strip() != "False":
        report.problems.append(f"importing {module} imports torch; envs must stay torch-free")
