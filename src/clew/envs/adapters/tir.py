"""tir/<dataset>: tool-integrated reasoning on reasoning-gym math; the agent runs Python, reads it, then answers.

Ids: ``tir/<dataset>`` for a reasoning-gym 0.1.25 dataset with a gold answer (``tir/basic_arithmetic``,
``tir/chain_sum``, ``tir/simple_equations``, ...). Each turn is one action:

- ``<code>python</code>`` runs the code in the bubblewrap sandbox (``clew.tools.python``); the next
  observation shows stdout, stderr (the exception) or why it was stopped, cut to
  ``observation_chars``. At most ``max_tool_calls`` runs per episode; a call past that is refused.
- ``answer: X`` or ``<answer>X</answer>`` ends the episode, scored by math-verify against the gold
  answer (``42``, ``42.0``, ``x = 42`` and ``84/2`` all match 42). The math expression the answer
  starts with is scored, so prose after it does not count (``42 (I computed 6*7, not 43)`` is 42);
  an answer that starts with prose is parsed whole. math-verify runs in a worker process
  (``clew.envs.verify``) killed after ``verify_timeout_s``: an answer it cannot score in time
  (``10**10**10``) scores 0 and sets ``info["verifier_timeout"]``.
- Anything else (no code block, an empty or unclosed one, an empty answer) is an invalid action:
  it costs a turn, is flagged ``info["invalid_action"]`` and the question is shown again.

Reward: every step's reward is 0; the answer's score (1 correct, 0 wrong) is the episode's ``outcome``,
reported on the last step apart from the step rewards (so credit counts it once), with
``info["success"]`` and ``info["score"]``. The turn budget is ``max_tool_calls + 2`` unless given;
running out truncates the episode (outcome 0). A tool failure is an observation, never an exception;
only a sandbox that cannot start raises (``SandboxUnavailable``, checked at construction so a run
fails fast).

Expert: writes code that computes the answer and then answers what the tool printed. For datasets
that expose an arithmetic expression (``basic_arithmetic``, ``chain_sum``) the code prints it (with
exact fractions when it divides); for ``simple_equations`` it solves the linear equation from two
evaluations; for other datasets it prints the gold answer. State key:
``<dataset>:<index>:<tool calls>:<digest of the last tool output>``.

Kwargs: ``size``, ``dataset_kwargs``, ``dataset_seed`` as for ``rg/<dataset>``; ``max_tool_calls``
(default 2), ``max_turns``, ``timeout_s`` (per call, default 2), ``memory_mb`` (default 256),
``observation_chars`` (default 400), ``unsafe_local`` (run code without the sandbox; warns),
``verify_timeout_s`` (math-verify's limit per answer, default 5).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from clew.envs.adapters.reasoning_gym import load_dataset
from clew.envs.answers import math_head
from clew.envs.base import StepResult, ensure_running
from clew.envs.verify import Bounded, Prepare, call_bounded, check_timeout, warm_bounded
from clew.tools.calls import format_result, parse_action
from clew.tools.python import ToolResult, default_sandbox, run

USAGE = "Run Python with <code>...</code> (print the result; {calls} run(s) left), then reply 'answer: <value>'."
_MAX_ANSWER_CHARS = 200


def verify_answer(gold: str, answer: str) -> bool:
    """math-verify's verdict on ``answer`` against ``gold``; unparsable or crashing input is wrong.

    The answer (cut to 200 characters) is read from its leading math expression (``math_head``),
    or whole when that is empty or does not parse. No time limit of its own: math-verify's SIGALRM
    cannot stop a computation that holds the GIL, so the env calls this through ``score_math_answer``.
    """
    from math_verify import parse, verify

    answer = answer[:_MAX_ANSWER_CHARS].replace("\u2212", "-")
    try:
        expected = parse(gold, parsing_timeout=None)  # type: ignore[arg-type]
        for text in dict.fromkeys((math_head(answer), answer)):
            target = parse(text, parsing_timeout=None) if text else []  # type: ignore[arg-type]
            if target:
                return bool(verify(expected, target, timeout_seconds=None))  # type: ignore[arg-type]
        return False
    except Exception:  # math-verify and sympy raise on odd input; that is a wrong answer
        return False


def _warm_math_verify() -> None:
    verify_answer("1", "1")  # imports math-verify and sympy once per worker, outside any answer's limit


def _verify_in_worker(_: None, gold: str, answer: str) -> bool:
    return verify_answer(gold, answer)


def score_math_answer(gold: str, answer: str, timeout_s: float) -> Bounded:
    """``verify_answer`` in a verifier worker process, killed after ``timeout_s`` (``Bounded.timed_out``)."""
    return call_bounded(_verify_in_worker, (gold, answer), timeout_s, Prepare(_warm_math_verify))


def expert_code(entry: dict[str, Any]) -> str:
    """Python that prints the answer of a reasoning-gym item, from its metadata where it can."""
    meta = entry.get("metadata", {})
    if "expression" in meta:
        expr = str(meta["expression"])
        if "/" not in expr:
            return f"print({expr})"
        exact = re.sub(r"(\d+)", r"F(\1)", expr)
        return f"from fractions import Fraction as F\nprint({exact})"
    if "equation" in meta and "variable" in meta:
        lhs, _, rhs = str(meta["equation"]).partition("=")
        var = str(meta["variable"])
        return (
            f"from fractions import Fraction as F\nf = lambda {var}: ({lhs.strip()}) - ({rhs.strip()})\n"
            "print(F(-f(0), f(1) - f(0)))"
        )
    return f"print({str(entry['answer'])!r})"


class ToolReasoning:
    """One reasoning-gym question per episode, solved with up to ``max_tool_calls`` sandboxed Python runs.

    Args:
        dataset: reasoning-gym dataset name (must have gold answers).
        size: items in the dataset; the seed picks item ``seed % size``.
        max_tool_calls: code runs allowed per episode.
        max_turns: turn budget (default ``max_tool_calls + 2``).
        timeout_s: wall-clock limit of one run.
        memory_mb: address-space limit of one run.
        observation_chars: tool output shown to the agent is cut to this many characters.
        dataset_kwargs: the dataset's config fields.
        dataset_seed: seed of the dataset itself.
        unsafe_local: run code in a plain subprocess instead of the sandbox (warns; trusted code only).
        verify_timeout_s: limit for scoring one answer; past it the answer scores 0.
    """

    def __init__(
        self,
        dataset: str,
        size: int = 1000,
        max_tool_calls: int = 2,
        max_turns: int | None = None,
        timeout_s: float = 2.0,
        memory_mb: int = 256,
        observation_chars: int = 400,
        dataset_kwargs: dict[str, Any] | None = None,
        dataset_seed: int = 0,
        unsafe_local: bool = False,
        verify_timeout_s: float = 5.0,
    ) -> None:
        if size < 1 or max_tool_calls < 0:
            raise ValueError(f"tir/{dataset}: size must be >= 1 and max_tool_calls >= 0, got {size}, {max_tool_calls}")
        check_timeout(f"tir/{dataset}: verify_timeout_s", verify_timeout_s)
        self.verify_timeout_s = verify_timeout_s
        self.name, self.size, self.max_tool_calls = dataset, size, max_tool_calls
        self.max_turns = max_turns or max_tool_calls + 2
        self.timeout_s, self.memory_mb, self.observation_chars = timeout_s, memory_mb, observation_chars
        self.unsafe_local = unsafe_local
        self._data = load_dataset(dataset, size, dataset_seed, dict(dataset_kwargs or {}))
        if self._data[0].get("answer") is None:
            raise ValueError(f"tir/{dataset}: the dataset has no gold answers to score against")
        if not unsafe_local:
            default_sandbox().check()
        self._entry: dict[str, Any] = {}
        self.index, self.calls, self.turns, self._last = 0, 0, 0, ""
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        self.index = seed % self.size
        self._entry = self._data[self.index]
        self.calls, self.turns, self._last = 0, 0, ""
        self._finished = False
        warm_bounded(Prepare(_warm_math_verify))  # a verifier's start-up is paid here, never inside a step
        return self._prompt()

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "ToolReasoning")
        self.turns += 1
        parsed = parse_action(action)
        if parsed.answer is not None:
            return self._answer(parsed.answer)
        if parsed.error is not None:
            return self._continue(f"Error: {parsed.error}.", {"invalid_action": True})
        if self.calls >= self.max_tool_calls:
            note = f"Error: no tool runs left ({self.max_tool_calls} used); answer now."
            return self._continue(note, {"invalid_action": True, "tool_refused": True})
        return self._run_tool(parsed.code[0])

    def state_key(self) -> str:
        digest = hashlib.sha1(self._last.encode()).hexdigest()[:8]
        return f"{self.name}:{self.index}:{self.calls}:{digest}"

    def expert_action(self) -> str:
        if self.calls == 0 or not self._last.strip():
            return f"<code>{expert_code(self._entry)}</code>" if self.calls < self.max_tool_calls else self._gold()
        return f"answer: {self._last.strip()}"

    # --- steps ----------------------------------------------------------------------------
    def _run_tool(self, code: str) -> StepResult:
        self.calls += 1
        result = self._execute(code)
        self._last = result.stdout if result.ok else ""
        info: dict[str, Any] = {
            "tool_call": True,
            "tool_exit_code": result.exit_code,
            "tool_wall_s": round(result.wall_s, 4),
        }
        if result.timed_out or result.truncated:
            info["tool_stopped"] = "timeout" if result.timed_out else "output"
        return self._continue(format_result(result, self.observation_chars), info)

    def _execute(self, code: str) -> ToolResult:
        return run(code, timeout_s=self.timeout_s, memory_mb=self.memory_mb, unsafe_local=self.unsafe_local)

    def _answer(self, answer: str) -> StepResult:
        checked = score_math_answer(str(self._entry["answer"]), answer, self.verify_timeout_s)
        self._finished = True
        correct = checked.value is True
        score = float(correct)
        info: dict[str, Any] = {"success": correct, "tool_calls": self.calls, "score": score, "answer": answer.strip()}
        if checked.timed_out:
            info["verifier_timeout"] = True
        verdict = "Correct." if correct else f"Wrong. The answer was {self._entry['answer']}."
        return StepResult(verdict, 0.0, True, False, info, outcome=score)  # the score counts once, as the outcome

    def _continue(self, note: str, info: dict[str, Any]) -> StepResult:
        truncated = self.turns >= self.max_turns
        self._finished = truncated
        if truncated:
            info = {**info, "success": False}
            return StepResult(f"{note}\nOut of turns.", 0.0, False, True, info, outcome=0.0)
        return StepResult(f"{note}\n{self._prompt()}", 0.0, False, False, info)

    def gold_reply(self) -> str:
        return self._gold()

    def _gold(self) -> str:
        return f"answer: {self._entry['answer']}"

    def _prompt(self) -> str:
        usage = USAGE.format(calls=self.max_tool_calls - self.calls)
        return f"{str(self._entry['question']).rstrip()}\n{usage}"

    def close(self) -> None:
        self._entry = {}
