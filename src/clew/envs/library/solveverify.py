"""solve-verify-v0: a role-split game of two seats: a solver answers a sum, a verifier judges the answer."""

from __future__ import annotations

import random
import re

from clew.envs.base import PickledSnapshot, StepResult, ensure_running, normalize_action

SOLVER, VERIFIER = 0, 1
VERDICTS = ("correct", "wrong")
_NUMBER = re.compile(r"-?\d+")


class SolveVerify(PickledSnapshot):
    """Seat 0, the solver, sees ``What is a + b?`` and replies ``answer: <number>``; seat 1, the verifier, sees the
    question and the solver's answer and replies ``correct`` or ``wrong``; the verdict ends the game.

    Each seat's outcome is its own (``verdicts()``, role-level rewards): the solver's 1 when its number is the sum,
    else 0; the verifier's 1 when its verdict is right about the solver's answer (an answer without a number is
    wrong), else 0. So the solver's return never depends on the verifier, and the verifier learns to check, not to
    agree. A verifier reply that is neither verdict is an invalid action (``info["invalid_action"]``) and scores 0.

    ``digits`` (1-4) sets the operands' size; the seed draws them. The game's seats act through ``step``
    (``clew.envs.HasSeats``: two seats, the solver first), so a run plays it with one policy in both seats (self-play)
    or a team (``roles: [solver, verifier]``, one policy per seat). Expert: the sum, and the right verdict; valid
    actions: the sum and four near misses for the solver, both verdicts for the verifier.
    """

    def __init__(self, digits: int = 2) -> None:
        if not 1 <= digits <= 4:
            raise ValueError(f"solve-verify-v0: digits must be in [1, 4], got {digits!r}")
        self.digits = digits
        self.a = self.b = 0
        self.answer: int | None = None
        self.proposed = ""
        self.seat = SOLVER
        self.outcomes = [0.0, 0.0]
        self.finished = True

    def reset(self, seed: int) -> str:
        rng = random.Random(seed)
        low, high = 10 ** (self.digits - 1) if self.digits > 1 else 0, 10**self.digits - 1
        self.a, self.b = rng.randint(low, high), rng.randint(low, high)
        self.answer, self.proposed, self.seat, self.outcomes, self.finished = None, "", SOLVER, [0.0, 0.0], False
        return f"You are the solver. What is {self.a} + {self.b}? Reply: answer: <number>"

    def step(self, action: str) -> StepResult:
        ensure_running(self.finished, "SolveVerify")
        if self.seat == SOLVER:
            return self._solve(action)
        return self._verify(action)

    def _solve(self, action: str) -> StepResult:
        numbers = _NUMBER.findall(action)
        self.answer = int(numbers[-1]) if numbers else None
        self.proposed = action.strip()[:80]
        self.outcomes[SOLVER] = 1.0 if self.answer == self.a + self.b else 0.0
        self.seat = VERIFIER
        info = {} if numbers else {"invalid_action": True}
        question = f"You are the verifier. The question: what is {self.a} + {self.b}?"
        return StepResult(f"{question}\nThe solver replied: {self.proposed}\nReply: correct or wrong", 0.0, False,
                          False, info)  # fmt: skip

    def _verify(self, action: str) -> StepResult:
        verdict = normalize_action(action)
        right = "correct" if self.outcomes[SOLVER] == 1.0 else "wrong"
        self.outcomes[VERIFIER] = 1.0 if verdict == right else 0.0
        self.finished = True
        info = {} if verdict in VERDICTS else {"invalid_action": True}
        text = f"The sum is {self.a + self.b}. The solver was {right}; the verifier said {verdict or 'nothing'}."
        return StepResult(text, 0.0, True, False, info)

    # --- HasSeats -------------------------------------------------------------------------
    def seats(self) -> int:
        return 2

    def to_act(self) -> int:
        return self.seat

    def verdicts(self) -> list[float]:
        return list(self.outcomes)

    # --- extras ---------------------------------------------------------------------------
    def expert_action(self) -> str:
        if self.seat == SOLVER:
            return f"answer: {self.a + self.b}"
        return "correct" if self.outcomes[SOLVER] == 1.0 else "wrong"

    def valid_actions(self) -> list[str]:
        if self.seat == VERIFIER:
            return list(VERDICTS)
        total = self.a + self.b
        return [f"answer: {n}" for n in (total, total + 1, total - 1, total + 10, total - 10)]

    def state_key(self) -> str:
        return f"{self.a}+{self.b}|{self.seat}|{self.answer}"
