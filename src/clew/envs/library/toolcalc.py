"""toolcalc-v0: multi-turn tool use; the agent calls a calculator, reads results, then answers."""

from __future__ import annotations

import random

from clew.envs.base import PickledSnapshot, StepResult, ensure_running
from clew.tools.calculator import CalcError, evaluate, format_number

USAGE = "Tools: 'calc: <expression>' returns its value; 'answer: <number>' ends the episode."


class ToolCalc(PickledSnapshot):
    """Answer a question that chains ``n_ops`` arithmetic operations.

    Call syntax (one per turn, case-insensitive prefix):

    - ``calc: <expression>`` evaluates numbers with ``+ - * / // % **`` and parentheses; the next
      observation is ``Result: <value>`` or ``Error: <why>`` (flagged ``invalid_action``).
    - ``answer: <number>`` ends the episode with reward 1 if it equals the true value, else 0.

    Anything else is an invalid action: it costs a turn and returns an error observation; the env
    never raises on model output. The state key is the number of chained operations already
    computed with the calculator, which is also what the scripted expert follows.

    Args:
        n_ops: number of chained operations (1..8).
        max_operand: operands are drawn from ``[1, max_operand]``.
        max_steps: turn budget; None gives ``2 * n_ops + 4``.
    """

    def __init__(self, n_ops: int = 3, max_operand: int = 9, max_steps: int | None = None) -> None:
        if not 1 <= n_ops <= 8:
            raise ValueError(f"toolcalc n_ops must be in [1, 8], got {n_ops}")
        if max_operand < 1:
            raise ValueError(f"toolcalc max_operand must be >= 1, got {max_operand}")
        self.n_ops, self.max_operand = n_ops, max_operand
        self.max_steps = max_steps or 2 * n_ops + 4
        self._finished = True

    def reset(self, seed: int) -> str:
        rng = random.Random(seed)
        self.start = rng.randint(1, self.max_operand)
        self.ops = [(rng.choice("+-*"), rng.randint(1, self.max_operand)) for _ in range(self.n_ops)]
        self.partials = self._partials()
        self.question = self._question_text()
        self.progress = 0
        self.steps = 0
        self._finished = False
        return f"Question: what is {self.question}?\n{USAGE}"

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "ToolCalc")
        self.steps += 1
        head, _, body = action.strip().partition(":")
        kind = head.strip().lower()
        if kind == "calc":
            return self._finish_step(*self._calc(body))
        if kind == "answer":
            return self._answer(body)
        note = f"Error: expected 'calc: ...' or 'answer: ...', got {action.strip()[:40]!r}."
        return self._finish_step(note, {"invalid_action": True})

    def _calc(self, body: str) -> tuple[str, dict[str, object]]:
        try:
            value = evaluate(body)
        except CalcError as exc:
            return f"Error: {exc}.", {"invalid_action": True, "tool_error": str(exc)}
        if self.progress < self.n_ops and value == self.partials[self.progress]:
            self.progress += 1
        return f"Result: {format_number(value)}", {"tool_call": body.strip()}

    def _answer(self, body: str) -> StepResult:
        try:
            value = float(body.strip())
        except ValueError:
            return self._finish_step(f"Error: answer {body.strip()[:40]!r} is not a number.", {"invalid_action": True})
        correct = abs(value - self.partials[-1]) < 1e-6
        self._finished = True
        note = "Correct." if correct else "Wrong."
        info = {"correct": correct, "answer": format_number(value)}  # the answer, comparable across samples (maj@k)
        return StepResult(self._obs(note), float(correct), True, False, info)

    def _finish_step(self, note: str, info: dict[str, object]) -> StepResult:
        truncated = self.steps >= self.max_steps
        self._finished = truncated
        return StepResult(self._obs(note), 0.0, False, truncated, info)

    def state_key(self) -> str:
        return f"progress:{self.progress}"

    def valid_actions(self) -> list[str]:
        rng = random.Random(self.steps)
        a, b = rng.randint(1, self.max_operand), rng.randint(1, self.max_operand)
        return [f"calc: {a} {rng.choice('+-*')} {b}", f"answer: {rng.randint(-50, 200)}"]

    def expert_action(self) -> str:
        if self.progress >= self.n_ops:
            return f"answer: {format_number(self.partials[-1])}"
        prev = self.start if self.progress == 0 else self.partials[self.progress - 1]
        op, operand = self.ops[self.progress]
        return f"calc: {format_number(prev)} {op} {operand}"

    def gold_reply(self) -> str:
        return f"answer: {format_number(self.partials[-1])}"

    def _partials(self) -> list[float]:
        values, acc = [], float(self.start)
        for op, operand in self.ops:
            acc = evaluate(f"{acc} {op} {operand}")
            values.append(acc)
        return values

    def _question_text(self) -> str:
        text = str(self.start)
        for op, operand in self.ops:
            text = f"({text} {op} {operand})"
        return text[1:-1] if self.ops else text

    def _obs(self, note: str) -> str:
        return f"{note}\nQuestion: what is {self.question}?\n{USAGE}"
