"""verifiers/<env> (clew.envs.adapters.verifiers_text): envs built here only (no download, no model API)."""

from __future__ import annotations

import asyncio
import textwrap
import types
from pathlib import Path

import pytest

pytest.importorskip("verifiers.v1")
import verifiers.v1 as vf

from clew.envs import make
from clew.envs.adapters.verifiers_text import VerifiersEnv, module_name
from clew.envs.adapters.verifiers_tools import parse_reply
from clew.envs.base import EnvFinishedError, StepResult
from clew.envs.checker import check_env
from tests.envs.verifiers_demo import build_demo_env


def play(env: VerifiersEnv, seed: int, actions: list[str]) -> tuple[str, list[StepResult]]:
    first = env.reset(seed)
    results = []
    for action in actions:
        results.append(env.step(action))
        if results[-1].terminated or results[-1].truncated:
            break
    return first, results


# --- single turn ---------------------------------------------------------------------------------


def test_math_right_and_wrong_answers():
    env = build_demo_env("clew-demo-math")
    first, (last,) = play(env, 1, ["42"])
    assert first == "Reply with the number only.\n\nWhat is 7 * 6?"
    assert last.terminated and not last.truncated and last.reward == 0.0
    assert last.outcome == 1.0 and last.info["success"] is True
    assert last.info["rewards"] == {"exact_match": 1.0} and last.info["metrics"] == {"reply_chars": 2.0}
    assert env.trace is not None and [m.role for m in env.trace.messages] == ["system", "user", "assistant"]
    _, (last,) = play(env, 1, ["41"])
    assert last.outcome == 0.0 and last.info["success"] is False
    with pytest.raises(EnvFinishedError):
        env.step("42")
    env.close()


def test_seed_picks_task_and_taskset_kwargs_reach_the_config():
    rows = [{"question": "Capital of France?", "answer": "Paris"}]
    env = build_demo_env("clew-demo-math", rows=rows)
    assert env.reset(0).endswith("Capital of France?") and env.reset(5).endswith("Capital of France?")
    assert env.step("Paris").outcome == 1.0
    env.close()


def test_no_tools_means_json_is_plain_text():
    env = build_demo_env("clew-demo-math")
    env.reset(0)
    result = env.step('{"name": "x", "arguments": {}}')
    assert result.terminated and result.outcome == 0.0 and "invalid_action" not in result.info


# --- multi turn -----------------------------------------------------------------------------------


def test_guess_game_multi_turn():
    env = build_demo_env("clew-demo-guess")
    first, results = play(env, 0, ["8", "3", "4"])  # secret for task 0 is 4
    assert "Guess my number" in first
    assert [r.observation for r in results[:2]] == ["Lower.", "Higher."]
    assert all(r.outcome is None and not r.terminated for r in results[:2])
    last = results[-1]
    assert last.terminated and last.outcome == 1.0 and last.info["rewards"] == {"win": 1.0}
    assert last.info["turns"] == 3
    env.close()


def test_guess_game_role_turn_limit_truncates_and_scores_zero():
    env = build_demo_env("clew-demo-guess", env={"player": {"max_turns": 2}})
    _, results = play(env, 0, ["1", "2", "3"])
    last = results[-1]
    assert len(results) == 2 and last.truncated and not last.terminated
    assert last.outcome == 0.0 and last.info["stop_condition"] == "max_turns"
    env.close()


def test_adapter_step_budget_counts_malformed_actions():
    env = build_demo_env("clew-demo-calc", max_steps=2)
    env.reset(0)
    bad = env.step("<tool_call>not json</tool_call>")
    assert bad.info["invalid_action"] and not bad.terminated
    last = env.step("<tool_call>{}</tool_call>")
    assert last.truncated and last.info["invalid_action"] and last.outcome == 0.0


def test_reset_mid_episode_starts_over():
    env = build_demo_env("clew-demo-guess")
    env.reset(0)
    env.step("8")
    assert "Guess my number" in env.reset(1)
    assert env.step("11").terminated  # secret for task 1 is 11
    env.close()


# --- tools ------------------------------------------------------------------------------------------


def test_calc_tool_calls_state_and_weighted_outcome():
    env = build_demo_env("clew-demo-calc")
    first, results = play(
        env,
        0,
        [
            'Let me add. <tool_call>{"name": "calc_add", "arguments": {"a": 12, "b": 34}}</tool_call>',
            '{"name": "calc_multiply", "arguments": "{\\"a\\": 46, \\"b\\": 2}"}',
            "92",
        ],
    )
    assert '"name": "calc_add"' in first and "<tool_call>" in first and first.endswith("reply with the number only.")
    assert results[0].observation == '<tool_response name="calc_add">\n46\n</tool_response>'
    assert results[0].info == {"tool_calls": ["calc_add"]}
    assert results[1].observation.endswith("92\n</tool_response>")
    last = results[-1]
    assert last.outcome == pytest.approx(1.5) and last.info["rewards"] == {"correct": 1.0, "used_tools": 1.0}
    assert env.trace.state.tool_calls == 2
    assert [m.role for m in env.trace.messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert env.trace.messages[1].content == "Let me add."
    env.close()


@pytest.mark.parametrize(
    "action",
    [
        "<tool_call>{not json</tool_call>",
        '<tool_call>{"arguments": {"a": 1}}</tool_call>',
        '<tool_call>{"name": "calc_add", "arguments": [1, 2]}</tool_call>',
        '[{"name": "calc_add", "arguments": 3}]',
    ],
)
def test_malformed_tool_call_is_an_invalid_action_not_a_crash(action):
    env = build_demo_env("clew-demo-calc")
    env.reset(0)
    result = env.step(action)
    assert result.info["invalid_action"] is True and not result.terminated
    assert result.observation.startswith("Error:")
    assert env.step("92").outcome == pytest.approx(1.0)  # the malformed reply never entered the trace
    assert [m.role for m in env.trace.messages] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ('<tool_call>{"name": "calc_sqrt", "arguments": {"a": 4}}</tool_call>', "unknown tool"),
        ('<tool_call>{"name": "calc_add", "arguments": {"a": "x", "b": 1}}</tool_call>', "invalid arguments"),
    ],
)
def test_bad_tool_use_is_committed_with_an_error_result(action, error):
    env = build_demo_env("clew-demo-calc")
    env.reset(0)
    result = env.step(action)
    assert result.info["invalid_action"] is True and error in result.info["tool_error"]
    assert result.observation.startswith("<tool_response") and "error:" in result.observation
    last = env.step("92")
    assert [m.role for m in env.trace.messages] == ["user", "assistant", "tool", "assistant"]
    assert last.info["rewards"] == {"correct": 1.0, "used_tools": 0.0}


def test_parse_reply():
    assert parse_reply("42", tools=True).calls == []
    assert parse_reply("{looks like json", tools=True).content == "{looks like json"
    two = parse_reply('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b"}</tool_call>', True)
    assert [name for name, _ in two.calls] == ["a", "b"] and two.content is None
    assert parse_reply('<tool_call>{"name": "a", "arguments": {"x": 1}}', True).calls == [("a", '{"x": 1}')]


# --- stops, scoring errors, loading by id, async callers -------------------------------------------------


class StopData(vf.TaskData):
    pass


class StopTask(vf.Task[StopData]):
    @vf.stop
    async def said_stop(self, response: vf.Response) -> bool:
        return "STOP" in (response.message.content or "")

    @vf.reward(weight=2.0)
    async def fragile(self, trace: vf.Trace) -> float:
        if trace.last_reply == "crash":
            raise ValueError("cannot score this")
        return 0.5


class StopTaskset(vf.Taskset[StopTask, vf.TasksetConfig]):
    def load(self):
        yield StopTask(StopData(prompt="Say something."), self.config.task)


def _stop_module() -> types.ModuleType:
    module = types.ModuleType(module_name("clew-demo-stop"))
    module.StopTaskset, module.__all__ = StopTaskset, ["StopTaskset"]
    return module


def test_response_stop_and_weighted_partial_score():
    env = VerifiersEnv("clew-demo-stop", module=_stop_module(), success_threshold=1.0)
    env.reset(0)
    result = env.step("STOP now")
    assert result.terminated and result.info["stop_condition"] == "said_stop"
    assert result.outcome == pytest.approx(1.0) and result.info["rewards"] == {"fragile": 0.5}


def test_reward_that_raises_scores_zero_with_scoring_error():
    env = VerifiersEnv("clew-demo-stop", module=_stop_module())
    env.reset(0)
    result = env.step("crash")
    assert result.terminated and result.outcome == 0.0 and "cannot score this" in result.info["scoring_error"]


def test_loads_an_installed_package_by_hub_id(tmp_path, monkeypatch):
    package = tmp_path / "clew_pkg_env"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            import verifiers.v1 as vf

            class EchoData(vf.TaskData):
                word: str

            class EchoTask(vf.Task[EchoData]):
                @vf.reward
                async def echoed(self, trace: vf.Trace) -> float:
                    return float(trace.last_reply == self.data.word)

            class EchoConfig(vf.TasksetConfig):
                words: list[str] = ["alpha", "beta"]

            class EchoTaskset(vf.Taskset[EchoTask, EchoConfig]):
                def load(self):
                    for w in self.config.words:
                        yield EchoTask(EchoData(prompt=f"Say {w}.", word=w), self.config.task)

            __all__ = ["EchoTaskset"]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = VerifiersEnv("someone/clew-pkg-env@0.1", words=["gamma"])
    assert env.reset(3) == "Say gamma."
    assert env.step("gamma").outcome == 1.0
    env.close()
    through_registry = make("verifiers/clew-pkg-env", words=["alpha", "beta"])  # the id clew users write
    check_env(through_registry, seeds=(0, 1))
    assert through_registry.reset(1) == "Say beta."
    through_registry.close()


def test_unknown_id_is_a_value_error():
    with pytest.raises(ValueError, match="cannot load"):
        VerifiersEnv("clew-no-such-env-anywhere")


def test_driven_from_inside_a_running_event_loop():
    async def main() -> float | None:
        env = build_demo_env("clew-demo-math")
        env.reset(0)
        return env.step("5").outcome

    assert asyncio.run(main()) == 1.0


@pytest.mark.parametrize("env_id", ["clew-demo-math", "clew-demo-guess", "clew-demo-calc"])
def test_check_env_contract(env_id: str) -> None:
    check_env(build_demo_env(env_id), seeds=(0, 1))


def test_the_shipped_example_through_the_registry() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "hub_envs" / "guess_verifiers.py"
    env = make("verifiers/clew-guess", module=str(path), max_steps=8)
    check_env(env, seeds=(0, 1))
    env.reset(0)
    lo, hi = 1, 16
    while True:  # bisection on the replies, a guess inside prose
        mid = (lo + hi) // 2
        result = env.step(f"My guess is {mid}.")
        if result.terminated or result.truncated:
            break
        lo, hi = (mid + 1, hi) if result.observation == "Higher." else (lo, mid - 1)
    assert result.outcome == 1.0 and result.info["success"]
    env.close()


def test_an_unbounded_taskset_draws_each_task_once_and_refuses_negative_seeds(tmp_path: Path) -> None:
    drawn: list[int] = []

    class CountData(vf.TaskData):
        n: int

    class CountTask(vf.Task[CountData]):
        @vf.reward
        async def said(self, trace: vf.Trace) -> float:
            return float(trace.last_reply.strip() == str(self.data.n))

    class CountTaskset(vf.Taskset[CountTask, vf.TasksetConfig]):
        INFINITE = True

        def load(self):
            n = 0
            while True:
                drawn.append(n)
                yield CountTask(CountData(prompt=f"Say {n}.", n=n), self.config.task)
                n += 1

    module = types.ModuleType("clew_count")
    module.CountTaskset, module.__all__ = CountTaskset, ["CountTaskset"]
    env = VerifiersEnv("clew-count", module=module)
    assert env.reset(5) == "Say 5." and env.step("5").outcome == 1.0
    assert env.reset(2) == "Say 2." and env.reset(7) == "Say 7."
    assert drawn == list(range(8))  # items 0..7, each drawn once
    with pytest.raises(ValueError, match="seeds are >= 0"):
        env.reset(-1)
    env.close()
