"""bifurcation-v0: an early choice among k branches, a long irrelevant corridor, then the outcome."""

from __future__ import annotations

import random

from clew.envs.base import PickledSnapshot, StepResult, ensure_running, normalize_action

SIGNALS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple")
CORRIDOR_ACTIONS = ("walk", "wait")


class Bifurcation(PickledSnapshot):
    """The pure credit-assignment probe.

    At turn 0 a signal lamp shows one of ``branches`` colours and the agent picks ``branch i``.
    A fixed (per ``mapping_seed``) but unstated mapping from colour to the good branch decides the
    outcome. Then ``corridor_length`` turns follow in which ``walk`` and ``wait`` both advance and
    change nothing. After the corridor the episode terminates with reward 1 if the early choice was
    the good branch, else 0. All credit must travel back ``corridor_length`` turns to the first one.

    Args:
        branches: number of branches (2..8).
        corridor_length: number of irrelevant turns after the choice.
        mapping_seed: seeds the colour -> good-branch mapping (the same for every episode).
        max_steps: turn budget; None gives ``corridor_length + 4``.
    """

    def __init__(
        self,
        branches: int = 3,
        corridor_length: int = 10,
        mapping_seed: int = 0,
        max_steps: int | None = None,
    ) -> None:
        if not 2 <= branches <= len(SIGNALS):
            raise ValueError(f"bifurcation branches must be in [2, {len(SIGNALS)}], got {branches}")
        if corridor_length < 0:
            raise ValueError(f"bifurcation corridor_length must be >= 0, got {corridor_length}")
        self.branches, self.corridor_length = branches, corridor_length
        self.max_steps = max_steps or corridor_length + 4
        perm = list(range(1, branches + 1))
        random.Random(mapping_seed).shuffle(perm)
        self.good_branch = dict(zip(SIGNALS[:branches], perm))
        self._finished = True

    def reset(self, seed: int) -> str:
        self.signal = random.Random(seed).choice(SIGNALS[: self.branches])
        self.choice: int | None = None
        self.position = 0
        self.steps = 0
        self._finished = False
        return self._render("")

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "Bifurcation")
        self.steps += 1
        act = normalize_action(action)
        info: dict[str, object] = {}
        note = self._choose(act) if self.choice is None else self._advance(act)
        if note.startswith("Invalid"):
            info["invalid_action"] = True
        terminated = self.choice is not None and self.position >= self.corridor_length
        reward = 1.0 if terminated and self.choice == self.good_branch[self.signal] else 0.0
        truncated = not terminated and self.steps >= self.max_steps
        self._finished = terminated or truncated
        if terminated:
            note = "You reach the end: " + ("treasure!" if reward else "an empty room.")
        return StepResult(self._render(note), reward, terminated, truncated, info)

    def _choose(self, act: str) -> str:
        options = {f"branch {i}": i for i in range(1, self.branches + 1)}
        if act not in options:
            return f"Invalid action {act[:40]!r}."
        self.choice = options[act]
        return f"You enter branch {self.choice}."

    def _advance(self, act: str) -> str:
        if act not in CORRIDOR_ACTIONS:
            return f"Invalid action {act[:40]!r}."
        self.position += 1
        return ""

    def state_key(self) -> str:
        if self.choice is None:
            return f"start:{self.signal}"
        return f"corridor:{self.signal}:{self.choice}:{self.position}"

    def valid_actions(self) -> list[str]:
        if self.choice is None:
            return [f"branch {i}" for i in range(1, self.branches + 1)]
        return list(CORRIDOR_ACTIONS)

    def expert_action(self) -> str:
        return f"branch {self.good_branch[self.signal]}" if self.choice is None else "walk"

    def _render(self, note: str) -> str:
        head = [note] if note else []
        if self.choice is None:
            opts = ", ".join(self.valid_actions())
            return "\n".join([*head, f"A signal lamp shows {self.signal}.", f"Actions: {opts}."])
        where = f"Corridor of branch {self.choice}, step {self.position} of {self.corridor_length}."
        return "\n".join([*head, where, "Actions: walk, wait."])
