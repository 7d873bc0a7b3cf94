"""OPRL: credit.md section 19's worked example (the code's first-step baseline), the pooled baseline by hand, RLOO's
edge cases, and the refusal without PRM scores."""

from __future__ import annotations

import numpy as np
import pytest

from clew.credit import CreditInput, compute, get
from clew.credit.prm import rloo


def worked_example() -> CreditInput:
    """G = 2, R = [1, 0]; summed log-ratios [2.0, -1.0] and [0.5, 4.0] (beta 0.05: r = [0.1, -0.05], [0.025, 0.2])."""
    return CreditInput.from_arrays(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], prm_logratio=[2.0, -1.0, 0.5, 4.0]
    )


def test_worked_example_with_the_codes_first_step_baseline() -> None:
    credit = compute("oprl", worked_example(), step_baseline="first")
    assert credit.turn_advantage == pytest.approx([1.075, 0.775, -1.075, -0.725])


def test_the_pooled_step_baseline_by_hand() -> None:
    """Every step in the baseline: mean (0.1 - 0.05 + 0.025 + 0.2) / 4 = 0.06875, factor 4 / 3."""
    credit = compute("oprl", worked_example())
    steps = 4 / 3 * (np.array([0.1, -0.05, 0.025, 0.2]) - 0.06875)
    assert credit.turn_advantage == pytest.approx(np.array([1, 1, -1, -1]) + steps)
    assert compute("oprl", worked_example(), step_weight=0.0).turn_advantage == pytest.approx([1, 1, -1, -1])


def test_rloo_leaves_a_lone_entry_unchanged() -> None:
    values, ids = np.array([0.7, 0.3, 0.5]), np.array([0, 0, 1])
    assert rloo(values, ids) == pytest.approx([0.4, -0.4, 0.5])  # 2/1 * (x - 0.5); a group of one keeps R
    assert rloo(values, ids, include=np.array([True, False, False])) == pytest.approx([0.7, 0.3, 0.5])


def test_missing_scores_are_refused_and_unknown_baselines_named() -> None:
    plain = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0])
    with pytest.raises(ValueError, match="prm_logratio"):
        compute("oprl", plain)
    with pytest.raises(ValueError, match=r"step_baseline must be one of \['all', 'first'\]"):
        compute("oprl", worked_example(), step_baseline="mean")
    assert get("oprl").needs_implicit_prm and get("oprl").scores_with_policy


def test_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        lengths = rng.integers(1, 5, size=6)
        episode = np.repeat(np.arange(6), lengths)
        turn = np.concatenate([np.arange(k) for k in lengths])
        group, n = episode // 3, episode.size
        outcome = np.repeat(rng.random(6), lengths)
        ratio = rng.normal(size=n)
        inp = CreditInput.from_arrays(group, episode, turn, np.zeros(n), outcome, prm_logratio=ratio)
        for baseline in ("all", "first"):
            want = []
            for i in range(n):
                eps = sorted({int(e) for e in episode[group == group[i]]})
                r = np.array([outcome[episode == e][0] for e in eps])
                a_e = len(r) / (len(r) - 1) * (outcome[i] - r.mean())
                pool = [j for j in range(n) if group[j] == group[i] and (baseline == "all" or turn[j] == 0)]
                s = 0.05 * ratio[pool]
                a_s = len(s) / (len(s) - 1) * (0.05 * ratio[i] - s.mean()) if len(s) > 1 else 0.05 * ratio[i]
                want.append(a_e + a_s)
            assert compute("oprl", inp, step_baseline=baseline).turn_advantage == pytest.approx(want, abs=1e-9)
