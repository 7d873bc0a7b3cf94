"""Third-party-style envs for the env-contract tests, registered by path (``"tests.contract_envs:Lights"``).

``Counter`` has only ``reset``/``step``, ``ExpertOnly`` adds an expert, ``Lights`` has an expert and
valid actions whose word ("toggle") the built-in envs never use. Torch-free, as envs must be.
"""

from __future__ import annotations

import random

from clew.envs import StepResult
from clew.envs.base import ensure_running


class Counter:
    """Say anything three times; nothing but ``reset`` and ``step``."""

    built = 0

    def __init__(self, **_: object) -> None:
        Counter.built += 1
        self.turn, self.done = 0, False

    def reset(self, seed: int) -> str:
        self.turn, self.done = 0, False
        return f"count to three (seed {seed})"

    def step(self, action: str) -> StepResult:
        ensure_running(self.done, type(self).__name__)
        self.turn += 1
        self.done = self.turn >= 3
        return StepResult(f"you said {action}", float(self.done), self.done, False, {"success": self.done})


class ExpertOnly(Counter):
    """A scripted expert but no list of valid actions."""

    def expert_action(self) -> str:
        return "next"


class Lights:
    """Switch five lights off with ``toggle N``; expert and valid actions."""

    def __init__(self, **_: object) -> None:
        self.on, self.turn, self.done = [True], 0, False

    def reset(self, seed: int) -> str:
        rng = random.Random(seed)
        self.on = [rng.random() < 0.5 for _ in range(5)]
        self.on[rng.randrange(5)] = True
        self.turn, self.done = 0, False
        return self._observation()

    def _observation(self) -> str:
        return "lights: " + " ".join("1" if x else "0" for x in self.on) + ". switch them all off"

    def valid_actions(self) -> list[str]:
        return [f"toggle {i}" for i in range(5)]

    def expert_action(self) -> str:
        return f"toggle {self.on.index(True)}"

    def step(self, action: str) -> StepResult:
        ensure_running(self.done, "Lights")
        if action in self.valid_actions():
            self.on[int(action.split()[1])] ^= True
        self.turn += 1
        off = not any(self.on)
        self.done = off or self.turn >= 12
        return StepResult(self._observation(), float(off), off, self.done and not off, {"success": off})


class Flaky(Counter):
    """Counts to three, but its step raises in episodes with an odd seed (``always``: in every episode)."""

    def __init__(self, always: bool = False, **kw: object) -> None:
        super().__init__(**kw)
        self.always, self.seed = always, 0

    def reset(self, seed: int) -> str:
        self.seed = seed
        return super().reset(seed)

    def step(self, action: str) -> StepResult:
        if self.always or self.seed % 2:
            raise RuntimeError("simulator crashed")
        return super().step(action)


class Parity:
    """One reply; success when it has an even number of characters: a random policy's groups hold both outcomes
    (preference pairs for OPRL's DPO)."""

    def __init__(self, **_: object) -> None:
        self.done = False

    def reset(self, seed: int) -> str:
        self.done = False
        return "say something even"

    def step(self, action: str) -> StepResult:
        ensure_running(self.done, "Parity")
        self.done = True
        even = len(action) % 2 == 0
        return StepResult("done", float(even), True, False, {"success": even})
