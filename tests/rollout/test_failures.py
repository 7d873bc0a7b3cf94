"""Failures typed by cause: what an action makes the env do is the policy's (kept, scored as a failure,
penalised); what no action can cause is infra (left out of credit and baselines)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from clew import credit as credit_lib
from clew.envs import Env, InfraError, StepResult
from clew.envs.pool import EnvWorkerTimeout
from clew.policy.base import Completion
from clew.rollout import RolloutConfig, Task, collect
from clew.trainer.config import ShapingConfig
from clew.trainer.record import rollout_metrics
from clew.trainer.select import drop_env_errors, shape
from clew.types import Episode, Group

FRAGILE = "tests.rollout.test_failures:Fragile"
RELEASE = threading.Event()  # a hung step waits on it; set after each test so no thread outlives its test


@pytest.fixture(autouse=True)
def release_hung_steps() -> Iterator[None]:
    RELEASE.clear()
    yield
    RELEASE.set()


class JudgeDown(InfraError, ConnectionError):
    """The env's judge service is unreachable: the adapter knows no answer causes that."""


class Fragile:
    """Two ``step`` actions win (reward 1). ``hang`` hangs the step, ``raise`` makes it raise, ``outage`` meets
    a judge outage (an ``InfraError``); ``reset_fails`` breaks ``reset``."""

    def __init__(self, reset_fails: bool = False) -> None:
        self.reset_fails, self.steps = reset_fails, 0

    def reset(self, seed: int) -> str:
        if self.reset_fails:
            raise OSError("game files missing")
        self.steps = 0
        return "go"

    def step(self, action: str) -> StepResult:
        if action == "hang":
            RELEASE.wait(30)  # far past the tests' step timeout
        if action == "raise":
            raise ValueError("malformed move")
        if action == "outage":
            raise JudgeDown("judge at 10.0.0.1 refused the connection")
        self.steps += 1
        won = self.steps >= 2
        return StepResult("ok", float(won), won, False, {"success": won})


@dataclass
class Plays:
    """A scripted actor: the episode with request key ``k`` plays ``plans[k]`` in order (keys number the
    episodes task by task, members in order, when every env started)."""

    plans: dict[int, list[str]]
    continuous_batching: bool = True
    max_model_len: int = 1 << 62
    writes_context_edits: bool = True
    played: dict[int, int] = field(default_factory=dict)
    done: list[tuple[int, Completion | Exception]] = field(default_factory=list)
    lost: Collection[int] = ()  # keys whose requests come back lost (an engine worker died)

    def submit(self, key: int, prompt: list[int], env: Env, seed: int) -> None:
        turn = self.played.get(key, 0)
        self.played[key] = turn + 1
        lost = RuntimeError("engine worker 0 died twice")
        self.done.append((key, lost if key in self.lost else Completion([], [], "stop", self.plans[key][turn])))

    def poll(self) -> Sequence[tuple[int, Completion | Exception]]:
        done, self.done = self.done, []
        return done

    def pending(self) -> int:
        return len(self.done)


def _cfg(**kw: object) -> RolloutConfig:
    return RolloutConfig(**{"group_size": 4, "max_turns": 4, "env_step_timeout_s": 0.3, **kw})  # type: ignore[arg-type]


def test_a_step_the_action_hangs_or_breaks_is_a_penalised_policy_failure_kept_in_credit() -> None:
    """Outcomes 1, 0, 0, 1 with both failures kept: RLOO's A_i = r_i - mean of the other three, so
    2/3 for the winners, -2/3 for the failures, and the failing turn pays the penalty on top: -2/3 - 0.5."""
    actor = Plays({0: ["step", "step"], 1: ["step", "hang"], 2: ["raise"], 3: ["step", "step"]})
    groups = collect(actor, [Task(FRAGILE, 0)], _cfg(), seed=0)
    won, hung, broke, _ = groups[0].episodes
    assert won.error is None and won.failure is None and won.success and won.outcome == 1.0
    assert (hung.failure, hung.error, hung.truncation_reason) == ("policy", "timeout", "error")
    assert hung.outcome == 0.0 and not hung.success and len(hung.turns) == 2
    assert hung.turns[-1].info["invalid_action"] is True and hung.turns[-1].info["step_failure"] == "timeout"
    assert "invalid_action" not in hung.turns[0].info  # only the action that hung the env
    assert broke.failure == "policy" and "malformed move" in (broke.error or "") and broke.outcome == 0.0
    assert broke.turns[-1].info["step_failure"] == "exception"

    shape(groups, ShapingConfig(invalid_action_penalty=0.5), max_new_tokens=16)
    kept = drop_env_errors(groups)
    assert kept[0].episodes == groups[0].episodes  # every member stays in credit and the baseline
    assert [t.penalty for e in kept[0].episodes for t in e.turns] == [0, 0, 0, 0.5, 0.5, 0, 0]
    adv = credit_lib.compute("rloo", credit_lib.CreditInput.from_groups(kept)).turn_advantage
    assert adv.tolist() == pytest.approx([2 / 3, 2 / 3, -2 / 3, -2 / 3 - 0.5, -2 / 3 - 0.5, 2 / 3, 2 / 3])
    metrics = rollout_metrics(groups)
    assert (metrics["rollout/error_rate"], metrics["rollout/error_rate_policy"]) == (0.5, 0.5)
    assert metrics["rollout/error_rate_infra"] == 0.0


def test_a_failing_reset_is_infra_and_left_out() -> None:
    tasks = [Task(FRAGILE, 0, {"reset_fails": True}), Task(FRAGILE, 1)]
    groups = collect(Plays({k: ["step", "step"] for k in range(4)}), tasks, _cfg(), seed=0)
    assert all(e.failure == "infra" and "game files missing" in (e.error or "") for e in groups[0].episodes)
    assert all(not e.turns for e in groups[0].episodes)
    assert [g.task_id for g in drop_env_errors(groups)] == [f"{FRAGILE}#1"]  # the empty group is dropped
    metrics = rollout_metrics(groups)
    assert (metrics["rollout/error_rate_infra"], metrics["rollout/error_rate_policy"]) == (0.5, 0.0)


def test_an_infra_error_from_step_and_a_lost_request_are_infra_and_left_out() -> None:
    actor = Plays({0: ["step", "step"], 1: ["step", "outage"], 2: ["step", "step"], 3: ["raise"]}, lost={2})
    groups = collect(actor, [Task(FRAGILE, 0)], _cfg(), seed=0)
    ok, outage, lost, broke = groups[0].episodes
    assert outage.failure == "infra" and "JudgeDown" in (outage.error or "") and len(outage.turns) == 2
    assert "invalid_action" not in outage.turns[-1].info  # nothing to penalise: no action caused it
    assert lost.failure == "infra" and "died twice" in (lost.error or "") and not lost.turns
    assert broke.failure == "policy"
    shape(groups, ShapingConfig(invalid_action_penalty=0.5), max_new_tokens=16)
    assert drop_env_errors(groups)[0].episodes == [ok, broke]


def test_a_pooled_env_uses_the_same_step_timeout_and_a_hang_is_the_policys() -> None:
    """``env_processes``: the worker is killed after ``env_step_timeout_s`` (0.5 s, not the pool's own default)."""
    cfg = _cfg(group_size=1, env_step_timeout_s=0.5, env_processes=True)
    groups = collect(Plays({0: ["a", "hang"]}), [Task("tests.envs.test_pool:FlakyEnv", 0)], cfg, seed=0)
    (hung,) = groups[0].episodes
    assert hung.failure == "policy" and hung.error == "timeout" and hung.turns[-1].info["step_failure"] == "timeout"
    assert issubclass(EnvWorkerTimeout, TimeoutError)


def test_the_step_timeout_is_finite_by_default_and_null_still_means_none() -> None:
    assert RolloutConfig().env_step_timeout_s == 60.0
    assert RolloutConfig(env_step_timeout_s=None).env_step_timeout_s is None


def test_episode_records_without_a_failure_type_load_as_the_rule_they_ran_under() -> None:
    """Run dirs from before typed failures: an error there was left out of credit, i.e. infra."""
    old = Episode("t", 0, 0, truncated=True, error="timeout").to_dict()
    old.pop("failure")
    assert Episode.from_dict(old).failure == "infra"
    clean = Episode("t", 0, 0, terminated=True).to_dict()
    clean.pop("failure")
    assert Episode.from_dict(clean).failure is None
    typed = Group(0, "t", 0, [Episode("t", 0, 0, truncated=True, error="timeout", failure="policy")])
    assert Group.from_json(typed.to_json()) == typed
