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
    answer_extraction: what is scored. ``whole_reply`` (default): the stripped reply.
        ``last_number``: the last number in the reply ("6 + 0 = 6." scores "6"; signs, "1,234",
        "3/4", "2.5" and "1e3" are read whole, see ``clew.envs.answers``), as the usual GSM8K-style
        reward functions extract it; a reply with no number is an invalid action. Use it for numeric
        datasets when the policy is a chat model that explains before it answers.
    scoring: ``exact`` (default): 1 when the answer equals the gold answer (numbers compared as
        numbers: "3.0" == "3", "1,234" == "1234", fractions exactly, a relative tolerance of 1e-6
        only for floats; other answers as text with whitespace collapsed) or when the dataset's
        verifier gives it full credit (datasets with many valid answers), else 0. ``dataset``:
        reasoning-gym's ``score_answer`` as is, with its partial credit (gold "3": "-3" scores 0.5,
        "The answer is 3." about 0.06).
    verify_timeout_s: limit for the dataset's verifier on one answer (default 5); it runs in a
        worker process (``clew.envs.verify``) that is killed past the limit, the answer then scores
        0 and ``info["verifier_timeout"]`` is set.

Reward: every step's reward is 0; the last answer's score (0..1) is the episode's ``outcome``,
reported on the last step apart from the step rewards (so credit counts it once), with
``info["score"]`` on every attempt and ``info["success"]`` (``score >= 1``) on the last. A scorer
that crashes (``prime_factorization`` on a non-number) scores 0 and the step is flagged
``info["invalid_action"]``, as is an empty answer.

Expert: the dataset's gold answer (``HasExpert`` only for datasets that have one: boxnet,
graph_color, propositional_logic, rubiks_cube and rush_hour have ``answer=None`` and a validity
scorer, so they get no expert). State key: ``<dataset>:<index>:<attempt>``. No valid-action list
(answers are open text). ``composite`` needs a config and is refused.
"""

from __future__ import annotations

import inspect
import json
from functools import lru_cache
from typing import Any, NamedTuple

from clew.envs.answers import exact_match, last_number
from clew.envs.base import StepResult, ensure_running
from clew.envs.verify import Prepare, call_bounded, check_timeout, warm_bounded

ANSWER_HINT = "Reply with the final answer only."
EXTRACTIONS = ("whole_reply", "last_number")
SCORINGS = ("exact", "dataset")
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


class Score(NamedTuple):
    """An answer's score in [0, 1]; ``crashed``: the scorer raised; ``timed_out``: it ran past its limit."""

    value: float
    crashed: bool = False
    timed_out: bool = False


def dataset_score(dataset: Any, answer: str, entry: dict[str, Any]) -> float:
    """reasoning-gym's own ``score_answer``, clipped to [0, 1] (runs in a verifier worker)."""
    return min(max(float(dataset.score_answer(answer=answer, entry=entry)), 0.0), 1.0)


def extract_answer(reply: str, extraction: str) -> str:
    """The part of ``reply`` that is scored: all of it (stripped), or its last number ("" when none)."""
    if extraction == "last_number":
        return last_number(reply)
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
        scoring: ``exact`` or ``dataset`` (see the module docstring).
        verify_timeout_s: limit for the dataset's verifier on one answer.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ReasoningGym:
        """``ReasoningGymWithExpert`` when the dataset's items carry answers; the arguments are ``__init__``'s."""
        target = cls
        if cls is ReasoningGym:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            ds = load_dataset(a["dataset"], a["size"], a["dataset_seed"], dict(a["dataset_kwargs"] or {}))
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
        scoring: str = "exact",
        verify_timeout_s: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"rg/{dataset}: size must be >= 1, got {size}")
        if max_attempts < 1:
            raise ValueError(f"rg/{dataset}: max_attempts must be >= 1, got {max_attempts}")
        if answer_extraction not in EXTRACTIONS:
            raise ValueError(f"rg/{dataset}: answer_extraction must be one of {EXTRACTIONS}, got {answer_extraction!r}")
        if scoring not in SCORINGS:
            raise ValueError(f"rg/{dataset}: scoring must be one of {SCORINGS}, got {scoring!r}")
        check_timeout(f"rg/{dataset}: verify_timeout_s", verify_timeout_s)
        self.answer_extraction, self.scoring, self.verify_timeout_s = answer_extraction, scoring, verify_timeout_s
        self.name, self.size, self.max_attempts = dataset, size, max_attempts
        kwargs = dict(dataset_kwargs or {})
        self._data = load_dataset(dataset, size, dataset_seed, kwargs)
        self._verifier = Prepare(_dataset, (dataset, size, dataset_seed, json.dumps(kwargs, sort_keys=True)))
        self._entry: dict[str, Any] = {}
        self.index, self.attempt = 0, 0
        self._finished = True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        self.index = seed % self.size
        self._entry = self._data[self.index]
        self.attempt = 0
        self._finished = False
        warm_bounded(self._verifier)  # a verifier's start-up is paid here, never inside a step
        return self._prompt()

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "ReasoningGym")
        answer = extract_answer(action, self.answer_extraction)
        score, crashed, timed_out = self.score(answer) if answer else Score(0.0, crashed=True)
        self.attempt += 1
        info: dict[str, Any] = {"score": score, "attempt": self.attempt}
        if crashed:
            info["invalid_action"] = True
        if timed_out:
            info["verifier_timeout"] = True
        solved = score >= 1.0
        if solved or self.attempt >= self.max_attempts:
            self._finished = True
            info["success"], info["answer"] = solved, answer  # the extracted answer: what maj@k votes on
            verdict = "Correct." if solved else f"Wrong (score {score:.2f}). The answer was {self._entry['answer']}."
            return StepResult(verdict, 0.0, True, False, info, outcome=score)  # the score counts once, as the outcome
        left = self.max_attempts - self.attempt
        feedback = f"Wrong answer {answer[:60]!r} (score {score:.2f}). Try again; {left} attempt(s) left.\n\n"
        return StepResult(feedback + self._prompt(), 0.0, False, False, info)

    def state_key(self) -> str:
        return f"{self.name}:{self.index}:{self.attempt}"

    def score(self, answer: str) -> Score:
        """``answer``'s score on the current item under ``self.scoring``; the verifier runs time-bounded."""
        gold = self._entry.get("answer")
        if self.scoring == "exact" and gold is not None and exact_match(answer, str(gold)):
            return Score(1.0)  # the common right answer never leaves this process
        checked = call_bounded(dataset_score, (answer, self._entry), self.verify_timeout_s, self._verifier)
        if checked.timed_out or checked.error is not None:  # third-party scorers crash on malformed answers
            return Score(0.0, crashed=checked.error is not None, timed_out=checked.timed_out)
        value = float(checked.value)
        return Score(float(value >= 1.0) if self.scoring == "exact" else value)

    def close(self) -> None:
        self._entry = {}

    def _prompt(self) -> str:
        return f"{str(self._entry['question']).rstrip()}\n{ANSWER_HINT}"


class ReasoningGymWithExpert(ReasoningGym):
    """A dataset with gold answers: the expert answers them."""

    def expert_action(self) -> str:
        return str(self._entry["answer"])

    def gold_reply(self) -> str:
        return str(self._entry["answer"])
