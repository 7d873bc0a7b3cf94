"""Why episodes ended: the share of each truncation reason, and a one-line diagnosis when a budget dominated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clew.types import Episode

# The truncation reasons a run can do something about (``env``: the env truncated itself).
REASONS = ("max_new_tokens", "max_turns", "max_prompt_tokens", "error")
RUN_KNOBS = {
    "max_new_tokens": "raise rollout.max_new_tokens (an action and its stop token must fit)",
    "max_turns": "raise rollout.max_turns",
    "max_prompt_tokens": "raise rollout.max_prompt_tokens or keep less history (rollout.context: window or summary)",
    "error": "the env raised or timed out: see the error column of the trajectories",
}
EVAL_KNOBS = {
    "max_new_tokens": "raise --max-new-tokens (an action and its stop token must fit)",
    "max_turns": "raise --max-turns",
    "max_prompt_tokens": "keep less history (--context window --context-param turns=N, or --context summary)",
    "error": "the env raised or timed out",
}


def ending_shares(episodes: Sequence[Episode]) -> dict[str, float]:
    """Fraction of ``episodes`` that ended for each reason in ``REASONS`` (0.0 for none)."""
    n = len(episodes)
    return {r: sum(e.truncation_reason == r for e in episodes) / n if n else 0.0 for r in REASONS}


def mean_shares(records: Sequence[Mapping[str, Any]], namespace: str) -> dict[str, float]:
    """Mean of the ``{namespace}/ended_{reason}`` shares of metric records (0.0 where absent or none)."""
    n = max(len(records), 1)
    return {r: sum(rec.get(f"{namespace}/ended_{r}", 0.0) for rec in records) / n for r in REASONS}


def diagnose(
    shares: Mapping[str, float],
    budgets: Mapping[str, int],
    knobs: Mapping[str, str] = RUN_KNOBS,
    threshold: float = 0.5,
    demo_action_tokens: int | None = None,
) -> str | None:
    """One line naming the budget that ended at least ``threshold`` of the episodes, else None.

    ``shares`` maps a truncation reason to its fraction of episodes (``ending_shares``);
    ``budgets`` gives the limits (``{"max_new_tokens": 6, ...}``) and ``knobs`` the fix per reason.
    ``demo_action_tokens`` (the longest SFT demo action, stop token included) is named when it
    does not fit ``max_new_tokens``.
    E.g. ``{"max_new_tokens": 0.97}``, ``{"max_new_tokens": 6}`` ->
    "97 % of episodes ended at max_new_tokens=6 — raise rollout.max_new_tokens (...)".
    """
    top = max(REASONS, key=lambda r: shares.get(r, 0.0))
    share = shares.get(top, 0.0)
    if share < threshold or share == 0.0:
        return None
    if top == "error":
        where = "with an env error"
    else:
        where = f"at {top}={budgets[top]}" if top in budgets else f"at {top}"
    line = f"{round(100 * share)} % of episodes ended {where} — {knobs[top]}"
    if top == "max_new_tokens" and demo_action_tokens and demo_action_tokens > budgets.get(top, demo_action_tokens):
        line += f"; the expert's longest action takes {demo_action_tokens} tokens with its stop token"
    return line
