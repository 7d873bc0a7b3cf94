"""Metrics over k samples of the same task: pass@k, mean@k and maj@k, estimated from n >= k samples.

An evaluation with ``group_size`` n draws n episodes per held-out task. From a task's n samples, c of them
successes, the estimators below are unbiased for what k fresh samples would give, averaged over tasks:

- ``pass@k``: the probability that at least one of k samples succeeds. Chen et al., "Evaluating Large
  Language Models Trained on Code" (arXiv 2107.03374), section 2.1: 1 - C(n - c, k) / C(n, k), the
  probability that a uniformly random k-subset of the n samples contains a success. Computing
  1 - (1 - c/n)^k instead is biased low; computed here exactly with integer binomials.
- ``mean@k``: the expected success rate of k samples, c / n for every k <= n (the mean of Bernoulli draws
  does not depend on how many are averaged; reported with k so tables line up with pass@k).
- ``maj@k``: the probability that a majority vote over the final answers of k samples picks a correct one
  (Wang et al., "Self-Consistency", arXiv 2203.11171), averaged over the uniformly random k-subsets of
  the n samples: exactly when there are at most ``MAJ_EXACT_SUBSETS`` of them, else over that many seeded
  random subsets. A tie counts the share of the tied answers that are correct (a vote broken uniformly
  at random). Answers are comparable only when each answer has one verdict within its task; otherwise
  ``maj_at_k`` refuses (``NotComparable``).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

MAJ_EXACT_SUBSETS = 20_000  # maj@k enumerates every k-subset up to this many, then samples this many


class NotComparable(ValueError):
    """The same final answer was scored both correct and wrong within one task: a vote over answers is undefined."""


def _check(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n:
        raise ValueError(f"successes must be within 0..n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be within 1..n (n samples per task), got k={k}, n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c successes: 1 - C(n - c, k) / C(n, k) (exact binomials)."""
    _check(n, c, k)
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def mean_at_k(n: int, c: int, k: int) -> float:
    """Unbiased mean@k from n samples with c successes: c / n (checked like pass@k, so k <= n)."""
    _check(n, c, k)
    return c / n


def maj_at_k(answers: Sequence[str], correct: Sequence[bool], k: int, seed: int = 0) -> float:
    """Expected correctness of a majority vote over k of a task's samples (their final ``answers`` and whether
    each was ``correct``), over the random k-subsets of them."""
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"answers and correct differ in length: {n} vs {len(correct)}")
    _check(n, sum(map(bool, correct)), k)
    verdict = _verdicts(answers, correct)
    if math.comb(n, k) <= MAJ_EXACT_SUBSETS:
        subsets: Sequence[Sequence[int]] = list(itertools.combinations(range(n), k))
    else:
        rng = np.random.default_rng(seed)
        subsets = [rng.choice(n, size=k, replace=False).tolist() for _ in range(MAJ_EXACT_SUBSETS)]
    return float(np.mean([_vote([answers[i] for i in subset], verdict) for subset in subsets]))


def _verdicts(answers: Sequence[str], correct: Sequence[bool]) -> dict[str, bool]:
    verdict: dict[str, bool] = {}
    for answer, ok in zip(answers, correct):
        if verdict.setdefault(answer, bool(ok)) != bool(ok):
            raise NotComparable(f"the answer {answer[:80]!r} was scored both correct and wrong in one task")
    return verdict


def _vote(picked: Sequence[str], verdict: dict[str, bool]) -> float:
    """The majority answer's correctness; a tie: the share of the tied answers that are correct."""
    counts = Counter(picked)
    top = max(counts.values())
    tied = [answer for answer, count in counts.items() if count == top]
    return sum(verdict[a] for a in tied) / len(tied)


def final_answer(answer: object) -> str:
    """An env's ``info["answer"]`` as a vote: its text with whitespace collapsed."""
    return " ".join(str(answer).split())
