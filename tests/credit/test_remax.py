"""ReMax: credit.md section 5's worked example, multi-turn returns against the greedy baseline, the refusal."""

from __future__ import annotations

import pytest

from clew.credit import CreditInput, compute, get


def test_worked_example_by_hand() -> None:
    inp = CreditInput.from_arrays([0, 1], [0, 1], [0, 0], [0.7, 0.3], [0.7, 0.3], baseline=[0.5, 0.6])
    assert compute("remax", inp).turn_advantage == pytest.approx([0.2, -0.3])


def test_multi_turn_return_to_go_minus_the_greedy_return() -> None:
    """Rewards 0.1, -0.1 and an env-reported outcome 1 against a greedy return of 0.4: G = [1.0, 0.9]."""
    inp = CreditInput.from_arrays(
        [0, 0, 0], [0, 0, 1], [0, 1, 0], [0.1, -0.1, 0.0], [1.0, 1.0, 0.4], outcome_explicit=[True, True, True],
        baseline=[0.4, 0.4, 0.4],
    )  # fmt: skip
    credit = compute("remax", inp)
    assert credit.turn_return == pytest.approx([1.0, 0.9, 0.4])
    assert credit.turn_advantage == pytest.approx([0.6, 0.5, 0.0])  # the greedy-equal sample gets 0


def test_refused_without_a_greedy_baseline() -> None:
    with pytest.raises(ValueError, match=r"needs CreditInput\.baseline"):
        compute("remax", CreditInput.from_arrays([0], [0], [0], [1.0], [1.0]))
    assert get("remax").needs_greedy_baseline and not get("remax").needs_group
