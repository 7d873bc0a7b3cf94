"""pass@k, mean@k, maj@k (clew.eval.sampling) against closed forms and enumeration; IQM against rliable."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from clew.eval import at_k, iqm, stratified_bootstrap
from clew.eval import sampling as sampling_lib
from clew.eval.sampling import NotComparable, final_answer, maj_at_k, mean_at_k, pass_at_k
from clew.types import Episode, Group, Turn


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 1, 1, 0.1),  # pass@1 is c/n
        (4, 0, 2, 0.0),
        (4, 4, 1, 1.0),
        (6, 2, 5, 1.0),  # n - c < k: every 5-subset holds a success
    ],
)
def test_pass_at_k_is_the_closed_form(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_pass_at_k_is_the_share_of_k_subsets_with_a_success_and_not_the_biased_power() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations([i < c for i in range(n)], k))
                assert pass_at_k(n, c, k) == pytest.approx(sum(map(any, subsets)) / len(subsets), abs=1e-12)
    assert 1 - (1 - 2 / 5) ** 2 == pytest.approx(0.64) != pytest.approx(pass_at_k(5, 2, 2))  # 0.7


def test_mean_at_k_is_c_over_n_and_both_refuse_k_above_n() -> None:
    assert mean_at_k(8, 3, 1) == mean_at_k(8, 3, 8) == 3 / 8
    with pytest.raises(ValueError, match=r"k must be within 1\.\.n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="successes must be within"):
        mean_at_k(4, 5, 1)


def test_maj_at_k_by_hand() -> None:
    answers, correct = ["4", "4", "5", "6"], [True, True, False, False]
    # k=3: {0,1,2} and {0,1,3} vote "4" (right); {0,2,3} and {1,2,3} tie three ways (1/3 right each)
    assert maj_at_k(answers, correct, 3) == pytest.approx((1 + 1 + 1 / 3 + 1 / 3) / 4)
    assert maj_at_k(answers, correct, 1) == pytest.approx(0.5)  # maj@1 is mean@1
    assert maj_at_k(answers, correct, 4) == 1.0  # "4" has two votes
    assert maj_at_k(["7", "8", "8"], [True, False, False], 3) == 0.0


def test_maj_at_k_refuses_answers_that_are_not_comparable() -> None:
    with pytest.raises(NotComparable, match="scored both correct and wrong"):
        maj_at_k(["go north", "go north"], [True, False], 1)


def test_maj_at_k_samples_subsets_beyond_the_limit_and_stays_close(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    answers = [str(a) for a in rng.integers(0, 4, 14)]
    correct = [a == "1" for a in answers]
    exact = maj_at_k(answers, correct, 7)  # C(14, 7) = 3432 subsets, enumerated
    monkeypatch.setattr(sampling_lib, "MAJ_EXACT_SUBSETS", 3000)
    sampled = maj_at_k(answers, correct, 7)
    assert sampled != exact and sampled == pytest.approx(exact, abs=0.03)
    assert maj_at_k(answers, correct, 7) == sampled  # seeded


def test_final_answer_collapses_whitespace() -> None:
    assert final_answer(" 42 ") == "42" and final_answer("go   north\n") == "go north" and final_answer(7) == "7"


def _episode(seed: int, success: bool, answer: str) -> Episode:
    turn = Turn([1], [2], [0.0], f"answer: {answer}", info={"success": success, "answer": answer})
    return Episode("t", 0, seed, [turn], outcome=float(success), terminated=True)


def test_at_k_averages_over_tasks_with_a_bootstrap_over_tasks() -> None:
    verdicts = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    groups = [
        Group(i, "t", i, [_episode(i, bool(v), "right" if v else f"wrong{j}") for j, v in enumerate(row)])
        for i, row in enumerate(verdicts)
    ]
    metrics = {m.name: m for m in at_k(groups, [1, 2])}
    assert metrics["pass@2"].value == pytest.approx(np.mean([pass_at_k(4, sum(r), 2) for r in verdicts]))
    assert metrics["mean@1"].value == pytest.approx(7 / 16) and metrics["pass@1"].value == pytest.approx(7 / 16)
    # maj@2, task 0: 3 of 6 pairs tie "right" with a wrong answer (1/2 each); task 1: one all-right pair, four
    # ties, one all-wrong pair (3/6); task 2: 0; task 3: 1
    assert metrics["maj@2"].value == pytest.approx((0.25 + 0.5 + 0 + 1) / 4)
    assert metrics["pass@2"].low <= metrics["pass@2"].value <= metrics["pass@2"].high and metrics["pass@2"].tasks == 4


def test_at_k_leaves_maj_out_when_answers_are_not_comparable_or_missing() -> None:
    group = Group(0, "t", 0, [_episode(0, True, "x"), _episode(1, False, "x")])
    names = [m.name for m in at_k([group], [1])]
    assert names == ["pass@1", "mean@1"]
    assert all(math.isnan(m.low) for m in at_k([group], [1]))  # one task: no interval
    silent = [_episode(i, i == 2, "y") for i in (2, 3)]
    for episode in silent:
        episode.turns[-1].info.pop("answer")  # an env that reports no answers (a navigation episode)
    assert [m.name for m in at_k([Group(1, "t", 1, silent)], [1])] == ["pass@1", "mean@1"]
    cut = _episode(4, False, "z")
    cut.turns[-1].info.pop("answer")  # one sample cut before it answered: a wrong vote of its own
    metrics = {m.name: m for m in at_k([Group(2, "t", 2, [_episode(5, True, "y"), cut])], [1, 2])}
    assert metrics["maj@1"].value == 0.5 and metrics["maj@2"].value == 0.5  # a 1-1 tie: half right


def test_iqm_matches_rliable() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(0)
    for runs in (3, 4, 5, 7, 10, 16):
        scores = rng.random(runs)
        assert iqm(scores) == pytest.approx(metrics.aggregate_iqm(scores[:, None]), abs=1e-12)


def test_the_stratified_bootstrap_matches_an_independent_resampler() -> None:
    """rliable's own interval code needs ``arch``, which pandas 3 breaks; this reference resamples runs within
    each stratum with its own generator, so the two agree within Monte-Carlo error."""
    rng = np.random.default_rng(1)
    strata = [rng.random(5), rng.random(5) * 0.5, rng.random(5) + 0.2]
    ref_rng = np.random.default_rng(123)
    reps = [iqm(np.concatenate([s[ref_rng.integers(0, 5, 5)] for s in strata])) for _ in range(4000)]
    low, high = np.quantile(reps, [0.025, 0.975])
    ours = stratified_bootstrap(strata, iqm, resamples=4000, seed=7)
    assert ours == pytest.approx((low, high), abs=0.03)
