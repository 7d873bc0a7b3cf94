"""Guess the number as a verifiers 0.4.0 environment (a taskset and a multi-turn ``vf.Env``): what
``verifiers/<id>`` with ``module=<this file>`` plays.

    clew check-env verifiers/clew-guess --env-arg module=examples/hub_envs/guess_verifiers.py
    clew train configs/smollm2-verifiers-guess.yaml

Task ``i`` hides a number drawn from seed ``i``; the last whole number in a reply is the guess; the env answers
each guess "Higher." or "Lower." and records a ``win`` reward (weight 1) when the player names it within its
turns. The same game for OpenEnv is ``guess_openenv.py``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import verifiers.v1 as vf

SYSTEM = "You are playing a guessing game. Reply with one number and nothing else."


class GuessData(vf.TaskData):
    secret: int


class GuessTask(vf.Task[GuessData]):
    pass


class GuessConfig(vf.TasksetConfig):
    num_tasks: int = 1000
    low: int = 1
    high: int = 16


class GuessTaskset(vf.Taskset[GuessTask, GuessConfig]):
    def load(self) -> Iterator[GuessTask]:
        low, high = self.config.low, self.config.high
        for i in range(self.config.num_tasks):
            prompt = f"I picked a number from {low} to {high}. Guess it; one number per reply."
            secret = random.Random(i).randint(low, high)
            yield GuessTask(GuessData(prompt=prompt, system_prompt=SYSTEM, secret=secret), self.config.task)


class GuessEnvConfig(vf.EnvConfig):
    player: vf.AgentConfig = vf.AgentConfig(max_turns=6)


class GuessEnv(vf.Env[GuessEnvConfig]):
    async def run(self, task: Any, agents: Any) -> None:
        won = False
        async with agents.player.interaction(task) as game:
            segment = await game.turn()
            while not segment.terminated:
                numbers = re.findall(r"-?\d+", segment.last_reply)
                if not numbers:
                    segment = await game.turn("That is not a number. Guess again.")
                    continue
                guess = int(numbers[-1])
                if guess == task.data.secret:
                    won = True
                    break
                segment = await game.turn("Higher." if guess < task.data.secret else "Lower.")
            game.trace.record_reward("win", float(won), 1.0)


__all__ = ["GuessEnv", "GuessTaskset"]
