"""Reward sources composed by config (``rewards: [{name, weight, params}]``) and how their scores become the
episode's outcome and its step rewards, never both for one source.

Sources (``name``):

- ``verifier``: the env's own reward, as the env gave it. By default its score is the episode's outcome (the
  reported one, or the sum of the step rewards), and the env's step rewards move into it: each turn keeps its env
  reward in ``info["env_reward"]`` and its ``reward`` is rebuilt from step sources only. With
  ``params.keep_steps`` the env's step rewards stay on their turns (times the weight) and the verifier's outcome
  score is only what the env reported apart from them (0 where it reported nothing).
- ``judge``: a rubric score in [0, 1] of the whole episode (``clew.rewards.prompts.pointwise``).
- ``rank``: the group's episodes scored together, relative to each other (RULER-style), each in [0, 1].
- ``process``: a score in [0, 1] of each judged env step (every ``params.every``-th one and the last), the judge
  reading the transcript up to that step; it becomes that turn's step reward (times the weight), which step-level
  estimators (``turn_returns``, PURE, G-RA, MatchTIR) read. A judge source's ``params.offset`` is subtracted from
  its scores before weighting: with 0.5 an indifferent step is worth nothing, so a judge that likes every step does
  not pay the policy for taking more of them (the scores are logged as the judge gave them).

The episode's outcome becomes ``sum(weight * score)`` over the episode-level sources (verifier, judge, rank) and is
marked reported (``outcome_explicit``), so credit sees the return ``outcome + sum of step rewards`` with every
score counted once. A judgement that failed (timeout, crash, unparsable twice) makes its episode an ``infra``
failure (left out of credit and baselines, never scored as zero); an episode with a ``policy`` failure gets 0 from
every judge source without a call (it is scored as a failure, as the verifier scores it). Each source's score is
kept on the last turn's ``info["rewards"]`` (process scores on their turns' ``info["process"]``) for the store and
the viewer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from clew.types import Episode

SourceName = Literal["verifier", "judge", "rank", "process"]
SOURCE_NAMES: tuple[str, ...] = ("verifier", "judge", "rank", "process")
JUDGED: tuple[str, ...] = ("judge", "rank", "process")

RUBRICS = {
    "judge": "10: the agent completed the task fully and correctly; 5: partly; 0: not at all or off-task.",
    "rank": "A transcript that completes the task more fully and correctly scores higher.",
    "process": "10: the step clearly advanced the task; 5: neutral; 0: it was useless, wrong or harmful.",
}


@dataclass(frozen=True)
class JudgeParams:
    """How a ``judge``, ``rank`` or ``process`` source judges: its rubric and scale, which model (a registered or
    local model on a clew engine, or ``url`` with ``model`` the endpoint's model name), the request budget, and
    (process) which steps.

    ``samples`` > 1 (judge and process): the score is the mean of that many judgements sampled at ``temperature``
    (G-Eval's estimate of the expected score when the judge's probabilities are not at hand: Liu et al., "G-Eval:
    NLG Evaluation using GPT-4 with Better Human Alignment", arXiv 2303.16634, section 2.3, n = 20 there). It turns
    a judge whose greedy verdict barely moves into a graded one; the judgement fails when fewer than half of the
    samples parse. With prefix caching (vLLM) the samples share one prefill."""

    rubric: str = ""
    model: str = "smollm2-135m-instruct"
    engine: str = "hf"
    url: str | None = None
    scale: tuple[int, int] = (0, 10)
    max_context: int = 0
    max_tokens: int = 16
    reference: bool = False
    every: int = 1
    offset: float = 0.0
    samples: int = 1
    temperature: float | None = None
    engine_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if hi <= lo:
            raise ValueError(f"scale must be (low, high) with high > low, got {self.scale}")
        if self.every < 1 or self.samples < 1:
            raise ValueError(f"every and samples must be >= 1, got {self.every} and {self.samples}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (None: judging.temperature), got {self.temperature}")
        if self.max_tokens < 1 or self.max_context < 0:
            raise ValueError("max_tokens must be >= 1 and max_context >= 0 (0: the judge's own)")

    @property
    def backend_key(self) -> tuple[str, str, str | None, int, str]:
        """Sources with the same key share one loaded judge."""
        return (self.model, self.engine, self.url, self.max_context, repr(sorted(self.engine_params.items())))


@dataclass(frozen=True)
class VerifierParams:
    keep_steps: bool = False


PARAMS: dict[str, type[VerifierParams] | type[JudgeParams]] = {
    "verifier": VerifierParams, "judge": JudgeParams, "rank": JudgeParams, "process": JudgeParams,
}  # fmt: skip


def parse_params(name: str, params: Mapping[str, Any]) -> VerifierParams | JudgeParams:
    """``params`` of source ``name`` as its typed record; an unknown source or key fails naming the allowed ones."""
    if name not in PARAMS:
        raise ValueError(f"unknown reward source {name!r}; the sources are {list(SOURCE_NAMES)}")
    cls = PARAMS[name]
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"reward source {name!r}: unknown params {unknown}; allowed: {allowed}")
    values = dict(params)
    if "scale" in values:
        values["scale"] = tuple(int(x) for x in values["scale"])
    if name in JUDGED and not values.get("rubric"):
        values["rubric"] = RUBRICS[name]
    parsed: VerifierParams | JudgeParams = cls(**values)
    return parsed


@dataclass
class Scores:
    """What the sources said about one episode: ``episode[label]`` a score in [0, 1] or the env's outcome
    (verifier), ``steps[label]`` {turn index: score}, ``failed`` the first failure ("label: why") or None."""

    episode: dict[str, float] = field(default_factory=dict)
    steps: dict[str, dict[int, float]] = field(default_factory=dict)
    failed: str | None = None


@dataclass(frozen=True)
class Source:
    """One configured source: ``label`` (unique, logs and info keys), ``name`` (its kind), ``weight``."""

    label: str
    name: str
    weight: float
    params: VerifierParams | JudgeParams


def judged_steps(episode: Episode, every: int) -> list[int]:
    """Indices of the env-step turns a ``process`` source judges: every ``every``-th env step and the last one."""
    steps = [i for i, t in enumerate(episode.turns) if t.env_step]
    return [i for k, i in enumerate(steps, start=1) if k % every == 0 or i == steps[-1]]


def verifier_score(episode: Episode, params: VerifierParams) -> float:
    if params.keep_steps:
        return episode.outcome if episode.outcome_explicit else 0.0
    return episode.outcome


def _offset(source: Source) -> float:
    return source.params.offset if isinstance(source.params, JudgeParams) else 0.0


def apply(episode: Episode, sources: Sequence[Source], scores: Scores, success_threshold: float | None) -> None:
    """Rewrite ``episode``'s outcome and step rewards from its ``scores`` (module docstring), in place; a failed
    judgement marks it an ``infra`` failure and leaves its rewards as the env gave them."""
    if scores.failed is not None:
        episode.error, episode.failure, episode.truncated = f"judge failed: {scores.failed}"[:500], "infra", True
        return
    verdict = episode.turns[-1].info.get("success") if episode.turns else None
    keep = any(s.name == "verifier" and isinstance(s.params, VerifierParams) and s.params.keep_steps
               for s in sources)  # fmt: skip
    weight = next((s.weight for s in sources if s.name == "verifier"), 0.0)
    for turn in episode.turns:
        turn.info["env_reward"] = turn.reward
        turn.reward = weight * turn.reward if keep else 0.0
    for source in sources:
        for index, score in scores.steps.get(source.label, {}).items():
            turn = episode.turns[index]
            turn.reward += source.weight * (score - _offset(source))
            turn.info.setdefault("process", {})[source.label] = score
    episode.outcome = sum(
        s.weight * (scores.episode[s.label] - _offset(s)) for s in sources if s.label in scores.episode
    )
    episode.outcome_explicit = True
    if episode.turns:
        episode.turns[-1].info["rewards"] = dict(scores.episode)
        if verdict is None and success_threshold is not None:
            episode.turns[-1].info["success"] = episode.outcome >= success_threshold
