"""rg/<dataset>: reasoning-gym datasets as question answering with a verifier, single- or multi-turn.

Ids: ``rg/<dataset>`` for any reasoning-gym 0.1.25 dataset name (``rg/chain_sum``,
``rg/basic_arithmetic``, ``rg/leg_counting``, ...; ``reasoning_gym.factory.DATASETS`` lists them).

Kwargs:
    size: dataset size (default 1000); ``reset(seed)`` plays item ``seed % size``.
    max_attempts: answers allowed (default 1, single-turn). With more, a wrong answer gets the
        verifier's feedback ("wrong, try again") and the question again, until the answer scores 1
        or the attempts run out.
    dataset_kwargs: passed to ``reasoning_gym.create_dataset`` (e.g. ``{max_terms: 2}``).
    dataset_seed: the dataset's own seed (default 0); items are generated lazily from
        ``dataset_seed + index``, so ``reset`` is cheap and the dataset object is cached per process.
    answer_extraction: what the verifier scores. ``whole_reply`` (default): the stripped reply, so
        a chatty reply earns only reasoning-gym's partial credit. ``last_number``: the last number
        in the reply ("6 + 0 = 6." scores "6"), as the usual GSM8K-style reward functions extract
        it; a reply with no number is an invalid action. Use it for numeric datasets when the
        policy is a chat model that explains before it answers.

Reward: the verifier's score (0..1, ``score_answer``) on the last step, 0 on earlier attempts; the
episode's ``outcome`` is the last answer's score and ``info["success"]`` is ``score >= 1``. A
scorer that crashes (``prime_factorization`` on a non-number) scores 0 and the step is flagged
``info["invalid_action"]``, as is an empty answer.

Expert: the dataset's gold answer (``HasExpert`` only for datasets that have one: boxnet,
graph_color, propositional_logic, rubiks_cube and rush_hour have ``answer=None`` and a validity
scorer, so they get no expert). State key: ``<dataset>:<index>:<attempt>``. No valid-action list
(answers are open text). ``composite`` needs a config and is refused.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from clew.envs.base import StepResult, ensure_running

ANSWER_HINT = "Reply with the final answer only."
EXTRACTIONS = ("whole_reply", "last_number")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_REFUSED = {"composite": "it mixes other datasets and needs a config file; ask for those datasets by name instead"}


@lru_cache(maxsize=64)
def _dataset(name: str, size: int, seed: int, kwargs_json: str) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(name, seed=seed, size=size, **json.loads(kwargs_json))


def load_dataset(name: str, size: int, seed: int, kwargs: dict[str, Any]) -> Any:
    """The cached reasoning-gym dataset; unknown names and bad kwargs become a ``ValueError``."""
    if name in _REFUSED:
        raise ValueError(f"rg/{name} is not supported: {_REFUSED[name]}")
    try:
        return _dataset(name, size, seed, json.dumps(kwargs, sort_keys=True))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"rg/{name}: cannot build the reasoning-gym dataset: {exc}") from exc


def safe_score(dataset: Any, answer: str, entry: dict[str, Any]) -> tuple[float, bool]:
    """``(score, crashed)``: the verifier's score in [0, 1], or 0 when the scorer raises."""
    try:
        score = float(dataset.score_answer(answer=answer, entry=entry))
    except Exception:  # third-party scorers crash on malformed answers; that is a wrong answer
        return 0.0, True
    return min(max(score, 0.0), 1.0), False


def extract_answer(reply: str, extraction: str) -> str:
    """The part of ``reply`` the verifier scores: all of it (stripped), or its last number ("" when none)."""
    if extraction == "last_number":
        numbers = _NUMBER.findall(reply)
        return numbers[-1] if numbers else ""
    return reply.strip()


class ReasoningGym:
    """One reasoning-gym item per episode; ``max_attempts`` answers, scored by the dataset's verifier.

    ``ReasoningGym(name)`` returns a ``ReasoningGymWithExpert`` when the dataset has gold answers,
    so ``isinstance(env, HasExpert)`` is true exactly when an expert exists.

    Args:
        dataset: reasoning-gym dataset name.
        size: items in the dataset; the seed picks item ``seed % size``.
        max_attempts: answers allowed per episode (1 = single-turn).
        dataset_kwargs: the dataset's config fields.
        dataset_seed: seed of the dataset itself.
        answer_extraction: ``whole_reply`` or ``last_number`` (see the module docstring).
    """

    def __new__(
        cls,
        dataset: str,
        size: int = 1000,
        max_attempts: int = 1,
        dataset_kwargs: dict[str, Any] | None = None,
        dataset_seed: int = 0,
        answer_extraction: str = "whole_reply",
    ) -> ReasoningGym:
        target = cls
        if cls is ReasoningGym:
            ds = load_dataset(dataset, size, dataset_seed, dict(dataset_kwargs or {}))
            target = ReasoningGymWithExpert if ds[0].get("answer") is not None else ReasoningGym
        return object.__new__(target)

    def __init__(
        self,
        dataset: str,
        size: int = 1000,
        max_attempts: int = 1,
        dataset_kwargs: dict[str, Any] | None = None,
        dataset_seed: int = 0,
        answer_extraction: str = "whole_reply",
    ) -> None:
        if size < 1:
            raise ValueError(f"rg/{dataset}: size must be >= 1, got {size}")
        if max_attempts < 1:
            raise ValueError(f"rg/{dataset}: max_attempts must be >= 1, got {max_attempts}")
        if answer_extraction not in EXTRACTIONS:
            raise ValueError(f"rg/{dataset}: answer_extraction must be one of {EXTRACTIONS}, got {answer_extraction!r}")
        self.answer_extraction = answer_extraction
        self.name, self.size, self.max_attempts = dataset, size, max_attempts
        self._data = load_dataset(dataset, size, dataset_seed, dict(dataset_kwargs or {}))
        self._entry: dict[str, Any] = {}
        self.index, self.attempt = 0, 0
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        self.index = seed % self.size
        self._entry = self._data[self.index]
        self.attempt = 0
        self._finished = False
        return self._prompt()

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "ReasoningGym")
        answer = extract_answer(action, self.answer_extraction)
        score, crashed = safe_score(self._data, answer, self._entry) if answer else (0.0, True)
        self.attempt += 1
        info: dict[str, Any] = {"score": score, "attempt": self.attempt}
        if crashed:
            info["invalid_action"] = True
        solved = score >= 1.0
        if solved or self.attempt >= self.max_attempts:
            self._finished = True
            info["success"] = solved
            verdict = "Correct." if solved else f"Wrong (score {score:.2f}). The answer was {self._entry['answer']}."
            return StepResult(verdict, score, True, False, info, outcome=score)
        left = self.max_attempts - self.attempt
        feedback = f"Wrong answer {answer[:60]!r} (score {score:.2f}). Try again; {left} attempt(s) left.\n\n"
        return StepResult(feedback + self._prompt(), 0.0, False, False, info)

    def state_key(self) -> str:
        return f"{self.name}:{self.index}:{self.attempt}"

    def close(self) -> None:
        self._entry = {}

    def _prompt(self) -> str:
        return f"{str(self._entry['question']).rstrip()}\n{ANSWER_HINT}"


class ReasoningGymWithExpert(ReasoningGym):
    """A dataset with gold answers: the expert answers them."""

    def expert_action(self) -> str:
        return str(self._entry["answer"])
