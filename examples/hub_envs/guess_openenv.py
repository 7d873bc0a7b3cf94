"""Guess the number as an OpenEnv environment (``openenv-core`` 0.3.0): what ``openenv/<file>:<Class>`` plays.

    clew check-env openenv/examples/hub_envs/guess_openenv.py:GuessNumber
    clew train configs/smollm2-openenv-guess.yaml

The secret is drawn from the reset seed; the last whole number in a reply is the guess (a reply without one costs
no guess); each guess is answered "higher" or "lower"; a hit pays 1 and ends the
episode, running out of attempts ends it with 0. The same game written for verifiers is ``guess_verifiers.py``.
"""

from __future__ import annotations

import random
import re
from typing import Any

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field


class GuessAction(Action):
    guess: str = Field(..., description="your guess (the last whole number in it counts)")


class GuessObservation(Observation):
    feedback: str = ""
    attempts_left: int = 0


class GuessNumber(Environment[GuessAction, GuessObservation, State]):
    """Find a number in ``low..high`` in ``attempts`` guesses."""

    def __init__(self, low: int = 1, high: int = 16, attempts: int = 6) -> None:
        super().__init__()
        self.low, self.high, self.attempts = low, high, attempts
        self._state, self.secret, self.left = State(), low, attempts

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> GuessObservation:
        self.secret = random.Random(seed).randint(self.low, self.high)
        self.left, self._state = self.attempts, State(episode_id=episode_id, step_count=0)
        text = f"I picked a number from {self.low} to {self.high}. Guess it; I answer higher or lower."
        return GuessObservation(feedback=text, attempts_left=self.left)

    def step(self, action: GuessAction, timeout_s: float | None = None, **kwargs: Any) -> GuessObservation:
        numbers = re.findall(r"-?\d+", action.guess)
        if not numbers:  # costs no guess
            return GuessObservation(feedback="That is not a number. Guess again.", attempts_left=self.left)
        guess = int(numbers[-1])
        self.left -= 1
        self._state.step_count += 1
        if guess == self.secret:
            right = f"{guess} is right!"
            return GuessObservation(feedback=right, attempts_left=self.left, done=True, reward=1.0)
        hint = "higher" if guess < self.secret else "lower"
        done = self.left == 0
        feedback = f"{guess}: {hint}." + (f" Out of guesses; it was {self.secret}." if done else "")
        return GuessObservation(feedback=feedback, attempts_left=self.left, done=done, reward=0.0)

    @property
    def state(self) -> State:
        return self._state
