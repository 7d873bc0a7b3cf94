"""Reading a judge's reply: a bounded score, or a score per ranked candidate; anything else is unparsable (None).

Only the judge's own reply is parsed (never the judged text). A pointwise reply must contain ``SCORE: <number>``;
the last such line counts (a judge that reasons first, then scores, is read by its verdict). A number outside the
rubric's scale is unparsable, not clipped: a judge that answers out of range has not followed the format. Scores
are returned in [0, 1]: ``(s - lo) / (hi - lo)``.
"""

from __future__ import annotations

import re

from clew.rewards.prompts import CANDIDATES

SCORE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
RANK_LINE = re.compile(r"^\W*([A-Z])\W{0,3}\s*[:=\-]\s*(-?\d+(?:\.\d+)?)", re.MULTILINE)


def _unit(value: float, scale: tuple[int, int]) -> float | None:
    lo, hi = scale
    return (value - lo) / (hi - lo) if lo <= value <= hi else None


def parse_score(reply: str, scale: tuple[int, int]) -> float | None:
    """The last ``SCORE: x`` of ``reply`` mapped to [0, 1]; None when there is none or it is out of the scale."""
    found = SCORE.findall(reply)
    return _unit(float(found[-1]), scale) if found else None


def parse_ranking(reply: str, n: int, scale: tuple[int, int]) -> list[float] | None:
    """One score in [0, 1] per candidate A, B, ... (``n`` of them) from lines ``X: score``; None when a candidate is
    missing, scored twice with different numbers, or out of the scale. Letters beyond the ``n`` candidates are
    ignored."""
    scores: dict[str, float] = {}
    for letter, value in RANK_LINE.findall(reply):
        if letter not in CANDIDATES[:n]:
            continue
        unit = _unit(float(value), scale)
        if unit is None or scores.get(letter, unit) != unit:
            return None
        scores[letter] = unit
    if len(scores) != n:
        return None
    return [scores[c] for c in CANDIDATES[:n]]
