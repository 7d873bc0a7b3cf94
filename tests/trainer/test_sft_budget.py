"""SFT demos whose actions do not fit ``rollout.max_new_tokens`` are named before SFT trains."""

from __future__ import annotations

import warnings

import pytest

from clew.trainer.session import warn_short_budget


def test_demo_actions_longer_than_the_budget_warn_with_the_value_to_set() -> None:
    rows = [([1, 2], [5, 6, 7]), ([1], [5, 6, 7, 8, 9]), ([3], [4])]
    with pytest.warns(UserWarning, match=r"1 of 3 SFT demo actions .* rollout.max_new_tokens=4 .* longest 5") as caught:
        warn_short_budget(rows, max_new_tokens=4)
    assert "rollout.max_new_tokens=5 or more" in str(caught[0].message)


def test_demo_actions_that_fit_are_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_short_budget([([1], [5, 6, 7, 8])], max_new_tokens=4)
        warn_short_budget([], max_new_tokens=1)
