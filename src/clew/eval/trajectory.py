"""Trajectory metrics beyond success (FinTrace-style): how much of an episode repeats itself, how its tool calls fare,
how far it strays from the shortest solution, how long its actions are. Pure functions of recorded episodes;
``episode_metrics`` averages them over a batch (``rollout/*`` each iteration).

- ``repeated_state_share``: env actions taken from a state already visited in the episode (the env's ``state_key``,
  else the observation the action answered), over its env actions;
- ``repeated_action_share``: env actions equal (after whitespace and case folding) to the one before;
- ``tool_error_rate``: tool calls (``info["tool_call"]``) that failed: a nonzero ``tool_exit_code``, a
  ``tool_error``, or the call flagged invalid, over tool calls (absent without tool calls);
- ``steps_over_optimal``: a successful episode's env actions minus the optimum its env reported on the last turn
  (``info["optimal_steps"]``), over the episodes that have both (absent where no env knows its optimum);
- ``action_tokens``: tokens per env action (length drift shows here);
- ``ngram_repetition``: word 3-grams of an action that repeat an earlier 3-gram of the same action, over its 3-grams
  (0 for actions of fewer than four words), averaged over env actions.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from clew.types import REPLAYED, Episode, Turn


def _acts(episode: Episode) -> list[Turn]:
    return [t for t in episode.turns if t.env_step and not t.info.get(REPLAYED)]


def repeated_state_share(episode: Episode) -> float:
    seen: set[str] = set()
    repeats, acts = 0, _acts(episode)
    previous = episode.first_observation
    for turn in acts:
        where = turn.state_key if turn.state_key is not None else previous
        repeats += where in seen
        seen.add(where)
        previous = turn.observation
    return repeats / len(acts) if acts else 0.0


def repeated_action_share(episode: Episode) -> float:
    texts = [" ".join(t.action_text.lower().split()) for t in _acts(episode)]
    return sum(a == b for a, b in itertools.pairwise(texts)) / len(texts) if texts else 0.0


def ngram_repetition(text: str, n: int = 3) -> float:
    """The share of ``text``'s word n-grams that repeat an earlier one (0 without a repeat or with < n + 1 words)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if len(grams) > 1 else 0.0


def tool_errors(episode: Episode) -> tuple[int, int]:
    """(failed tool calls, tool calls)."""
    calls = [t for t in _acts(episode) if t.info.get("tool_call")]
    failed = sum(bool(t.info.get("tool_exit_code") or t.info.get("tool_error") or t.info.get("invalid_action"))
                 for t in calls)  # fmt: skip
    return failed, len(calls)


def steps_over_optimal(episode: Episode) -> float | None:
    acts = _acts(episode)
    optimal = episode.turns[-1].info.get("optimal_steps") if episode.turns else None
    if optimal is None or not episode.success:
        return None
    return float(len(acts) - int(optimal))


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """The batch's means (``rollout/`` names); tool and optimum metrics only where some episode has them."""
    if not episodes:
        return {}
    n = len(episodes)
    acts = [t for e in episodes for t in _acts(e)]
    out = {
        "rollout/repeated_state_share": sum(repeated_state_share(e) for e in episodes) / n,
        "rollout/repeated_action_share": sum(repeated_action_share(e) for e in episodes) / n,
        "rollout/action_tokens": sum(len(t.action_ids) for t in acts) / len(acts) if acts else 0.0,
        "rollout/ngram_repetition": sum(ngram_repetition(t.action_text) for t in acts) / len(acts) if acts else 0.0,
    }
    failed, calls = (sum(x) for x in zip(*(tool_errors(e) for e in episodes), strict=True))
    if calls:
        out["rollout/tool_error_rate"] = failed / calls
    over = [x for e in episodes if (x := steps_over_optimal(e)) is not None]
    if over:
        out["rollout/steps_over_optimal"] = sum(over) / len(over)
    return out
