"""tir/<dataset>: tool-integrated reasoning with the sandboxed interpreter, scored by math-verify."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from clew.credit import CreditInput, compute
from clew.envs import HasExpert, HasGoldReply, HasStateKey, check_env, make
from clew.envs.base import Env, StepResult
from clew.rollout import RolloutConfig, ScriptedActor, Task, collect
from clew.tools.sandbox import find_bwrap

pytestmark = pytest.mark.skipif(find_bwrap("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")


@pytest.fixture(scope="module", autouse=True)
def deps() -> Any:
    pytest.importorskip("reasoning_gym")
    return pytest.importorskip("math_verify")


def play_expert(env: Env, seed: int) -> list[StepResult]:
    assert isinstance(env, HasExpert)
    env.reset(seed)
    results = [env.step(env.expert_action())]
    while not (results[-1].terminated or results[-1].truncated):
        results.append(env.step(env.expert_action()))
    return results


@pytest.mark.parametrize("dataset", ["basic_arithmetic", "chain_sum", "simple_equations"])
def test_expert_writes_code_then_answers_what_it_printed(dataset: str) -> None:
    env = make(f"tir/{dataset}", size=100)
    for seed in range(6):
        results = play_expert(env, seed)
        assert len(results) == 2 and results[0].info["tool_call"] is True and results[0].info["tool_exit_code"] == 0
        assert (results[-1].outcome, results[-1].info["success"], results[-1].info["tool_calls"]) == (1.0, True, 1)


def test_passes_check_env() -> None:
    check_env("tir/chain_sum")


def test_tool_output_is_the_next_observation_and_answer_is_scored() -> None:
    env = make("tir/chain_sum", size=10)
    assert isinstance(env, HasStateKey)
    first = env.reset(1)
    assert "4 - 1 - 7" in first and "2 run(s) left" in first
    assert env.state_key() == "chain_sum:1:0:da39a3ee"  # sha1 of the empty string
    ran = env.step("Let me compute. <code>print(4 - 1 - 7)</code>")
    assert ran.observation.startswith("stdout:\n-4\n") and "1 run(s) left" in ran.observation and not ran.terminated
    assert str(env.state_key()).startswith("chain_sum:1:1:")
    done = env.step("<answer>-4.0</answer>")  # math-verify: -4.0 equals the gold -4
    assert (done.terminated, done.reward, done.outcome, done.info["success"]) == (True, 0.0, 1.0, True)


def test_won_episode_returns_its_outcome_once() -> None:
    """The score was both the last step's reward and the outcome, so REINFORCE's return was 2 for a win."""
    task = Task("tir/chain_sum", 1, {"size": 10})
    groups = collect(ScriptedActor("expert"), [task], RolloutConfig(group_size=1, max_turns=4), seed=0)
    (episode,) = groups[0].episodes
    assert (episode.outcome, episode.outcome_explicit, len(episode.turns)) == (1.0, True, 2)  # code, then answer
    credit = compute("reinforce", CreditInput.from_groups(groups), gamma=1.0)
    assert list(credit.turn_return) == [1.0, 1.0]  # R_0 = r_0 + r_1 + outcome = 0 + 0 + 1


_HANGING_STEPS = """
import json, threading
from clew.envs import make
env = make("tir/chain_sum", size=10, verify_timeout_s=1.0)
for answer in ("10**10**10", "9^9^9^9", "10^(10^10)", "-4"):
    env.reset(1)
    out = []
    thread = threading.Thread(target=lambda: out.append(env.step("answer: " + answer)))
    thread.start()
    thread.join()
    print(json.dumps([out[0].outcome, out[0].info]), flush=True)
"""


def test_answers_that_hang_math_verify_score_zero_on_a_worker_thread() -> None:
    """math-verify held the GIL on these for hours, and env steps run on threads: the whole scheduler stalled.

    A thread holding the GIL in one C call would also stall this test's own join, so the steps run in a
    child process, and a hang shows as its timeout.
    """
    try:
        run = subprocess.run([sys.executable, "-c", _HANGING_STEPS], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("an env step hung in math-verify")
    assert run.returncode == 0, run.stderr[-2000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    for outcome, info in results[:3]:
        assert (outcome, info["success"], info["verifier_timeout"]) == (0.0, False, True)
    assert results[3] == [1.0, {"success": True, "tool_calls": 0, "score": 1.0, "answer": "-4"}]  # scored as usual


def test_wrong_answer_scores_zero_and_names_the_answer() -> None:
    env = make("tir/chain_sum", size=10)
    env.reset(1)
    result = env.step("answer: 5")
    assert (result.terminated, result.outcome, result.info["success"]) == (True, 0.0, False)
    assert "The answer was -4" in result.observation


def test_gold_reply_is_a_right_answer() -> None:
    env = make("tir/chain_sum", size=10)
    env.reset(1)
    assert isinstance(env, HasGoldReply) and env.gold_reply() == "answer: -4"
    assert env.step(env.gold_reply()).outcome == 1.0


def test_malformed_actions_are_invalid_and_the_episode_goes_on() -> None:
    env = make("tir/chain_sum", size=10, max_tool_calls=1, max_turns=4)
    env.reset(1)
    for action in ("just text", "<code>print(1)"):
        result = env.step(action)
        assert result.info["invalid_action"] is True and not result.terminated and "Error:" in result.observation
    crash = env.step("<code>1/0</code>")  # a failing program is an observation, not an invalid action
    assert "ZeroDivisionError" in crash.observation and "invalid_action" not in crash.info
    refused = env.step("<code>print(2)</code>")  # past the tool budget; also the last turn
    assert refused.info["tool_refused"] is True and refused.truncated and refused.outcome == 0.0


def test_timeouts_in_the_tool_are_observations() -> None:
    env = make("tir/basic_arithmetic", size=10, timeout_s=0.5)
    env.reset(0)
    result = env.step("<code>while True: pass</code>")
    assert "[stopped: time limit" in result.observation and result.info["tool_stopped"] == "timeout"
    assert not result.terminated and not result.truncated


def test_bad_kwargs_fail_fast() -> None:
    with pytest.raises(ValueError, match="max_tool_calls"):
        make("tir/chain_sum", max_tool_calls=-1)
    with pytest.raises(ValueError, match="not registered"):
        make("tir/no_such_dataset")
    for bad in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="verify_timeout_s must be a positive finite number"):
            make("tir/chain_sum", verify_timeout_s=bad)


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [("42", "42", True), ("42", "42.0", True), ("-3", "x = -3", True), ("1/2", "0.5", True), ("7", "8", False)]
    + [("5", "garbage", False), ("5", "", False), ("5", "5" * 500, False)]
    + [("42", "42 (I computed 6*7, not 43)", True), ("42", "43 (not 42)", False), ("-3", "\u22123", True)]
    + [("42", "The answer is 42", True), ("1/2", "\\frac{1}{2} exactly", True), ("-3", "x = -3, so x < 0", True)],
)
def test_answers_are_scored_by_math_verify(gold: str, answer: str, correct: bool) -> None:
    from clew.envs.adapters.tir import verify_answer

    assert verify_answer(gold, answer) is correct


def test_expert_code_is_exact_for_division_and_equations() -> None:
    from clew.envs.adapters.tir import expert_code

    assert (
        expert_code({"metadata": {"expression": "7 / 2 * 4"}})
        == "from fractions import Fraction as F\nprint(F(7) / F(2) * F(4))"
    )
    solve = expert_code({"metadata": {"equation": "56 - 98*e = -1218", "variable": "e"}})
    assert solve.endswith("f = lambda e: (56 - 98*e) - (-1218)\nprint(F(-f(0), f(1) - f(0)))")
