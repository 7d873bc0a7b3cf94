"""Three small verifiers 0.4.0 environments built in memory (no download, no API): fixtures for the adapter's tests
(``tests/envs/test_verifiers.py``).

- ``clew-demo-math``: single turn; a ``Taskset`` over in-memory rows, an exact-match ``@vf.reward``.
- ``clew-demo-guess``: multi-turn; an ``Env`` subclass whose ``run`` answers each guess "higher"/"lower"
  through ``agents.player.interaction(task)`` and records the game's reward itself.
- ``clew-demo-calc``: tools; a ``Toolset`` with ``@vf.tool`` methods (``calc_add``, ``calc_multiply``), a
  typed ``State`` the tools update, a weighted answer reward plus a tool-use reward.

``build_demo_env(id, **kwargs)`` registers the id's module and returns a ``VerifiersEnv``.
"""

from __future__ import annotations

import types
from typing import Any

import verifiers.v1 as vf

from clew.envs.adapters.verifiers_text import VerifiersEnv, module_name

MATH_ROWS = [  # what a datasets.Dataset.from_list([...]) would hold
    {"question": "What is 2 + 3?", "answer": "5"},
    {"question": "What is 7 * 6?", "answer": "42"},
    {"question": "What is 10 - 4?", "answer": "6"},
]


# --- single turn ------------------------------------------------------------------------------------


class MathData(vf.TaskData):
    answer: str


class MathTask(vf.Task[MathData]):
    @vf.reward(weight=1.0)
    async def exact_match(self, trace: vf.Trace) -> float:
        return float(trace.last_reply.strip() == self.data.answer)

    @vf.metric
    async def reply_chars(self, trace: vf.Trace) -> float:
        return float(len(trace.last_reply))


class MathConfig(vf.TasksetConfig):
    rows: list[dict[str, str]] = MATH_ROWS


class MathTaskset(vf.Taskset[MathTask, MathConfig]):
    def load(self):
        for row in self.config.rows:
            yield MathTask(
                MathData(prompt=row["question"], answer=row["answer"], system_prompt="Reply with the number only."),
                self.config.task,
            )


# --- multi turn -------------------------------------------------------------------------------------


class GuessData(vf.TaskData):
    secret: int


class GuessTask(vf.Task[GuessData]):
    pass


class GuessConfig(vf.TasksetConfig):
    num_tasks: int = 5
    high: int = 16


class GuessTaskset(vf.Taskset[GuessTask, GuessConfig]):
    def load(self):
        for i in range(self.config.num_tasks):
            secret = (7 * i + 3) % self.config.high + 1
            yield GuessTask(
                GuessData(
                    prompt=f"Guess my number between 1 and {self.config.high}. Reply with a number only.",
                    secret=secret,
                ),
                self.config.task,
            )


class GuessEnvConfig(vf.EnvConfig):
    player: vf.AgentConfig = vf.AgentConfig(max_turns=6)


class GuessEnv(vf.Env[GuessEnvConfig]):
    async def run(self, task, agents):
        won = False
        async with agents.player.interaction(task) as game:
            segment = await game.turn()
            while not segment.terminated:
                try:
                    guess = int(segment.last_reply.strip())
                except ValueError:
                    segment = await game.turn("That is not a number. Guess again.")
                    continue
                if guess == task.data.secret:
                    won = True
                    break
                segment = await game.turn("Higher." if guess < task.data.secret else "Lower.")
            game.trace.record_reward("win", float(won), 1.0)


# --- tools ------------------------------------------------------------------------------------------


class CalcState(vf.State):
    tool_calls: int = 0


class CalcToolset(vf.Toolset[vf.ToolsetConfig, CalcState]):
    TOOL_PREFIX = "calc"

    @vf.tool
    def add(self, a: float, b: float) -> str:
        """Return a + b."""
        self.state.tool_calls += 1
        return f"{a + b:g}"

    @vf.tool
    async def multiply(self, a: float, b: float) -> str:
        """Return a * b."""
        self.state.tool_calls += 1
        return f"{a * b:g}"


class CalcData(vf.TaskData):
    answer: str


class CalcTaskConfig(vf.TaskConfig):
    tools: vf.ToolsetConfig = vf.ToolsetConfig()


class CalcTask(vf.Task[CalcData, CalcState, CalcTaskConfig]):
    @classmethod
    def toolsets(cls, config: CalcTaskConfig) -> list[vf.Toolset]:
        return [CalcToolset(config.tools)]

    @vf.reward(weight=1.0)
    async def correct(self, trace: vf.Trace) -> float:
        return float(trace.last_reply.strip() == self.data.answer)

    @vf.reward(weight=0.5)
    async def used_tools(self, trace: vf.Trace) -> float:
        return float(trace.state.tool_calls > 0)


class CalcConfig(vf.TasksetConfig):
    task: CalcTaskConfig = CalcTaskConfig()


class CalcTaskset(vf.Taskset[CalcTask, CalcConfig]):
    def load(self):
        for a, b, c in [(12, 34, 2), (3, 5, 7)]:
            yield CalcTask(
                CalcData(
                    prompt=f"Compute ({a} + {b}) * {c} with the tools, then reply with the number only.",
                    answer=str((a + b) * c),
                ),
                self.config.task,
            )


# --- registration -----------------------------------------------------------------------------------


def _module(name: str, *exports: type) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls in exports:
        setattr(module, cls.__name__, cls)
    module.__all__ = [cls.__name__ for cls in exports]
    return module


DEMOS: dict[str, tuple[type, ...]] = {
    "clew-demo-math": (MathTaskset,),
    "clew-demo-guess": (GuessTaskset, GuessEnv),
    "clew-demo-calc": (CalcTaskset,),
}


def build_demo_env(env_id: str, **kwargs: Any) -> VerifiersEnv:
    """A ``VerifiersEnv`` over one of ``DEMOS``, its module built in memory."""
    return VerifiersEnv(env_id, module=_module(module_name(env_id), *DEMOS[env_id]), **kwargs)
