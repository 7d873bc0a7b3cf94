"""Groups + credit -> training rows (``TokenRow``), per turn or merged along shared prefixes.

``merge_prefix``: when a turn's prompt begins with the previous row's full token sequence
(prompt + action), the turn is appended to that row as a new span, so one forward pass scores
several actions. Causal attention makes every action token's log-prob identical to the per-turn
row's, so with episode weighting the loss and gradients are the same, with far fewer tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clew.tensors import TokenRow
from clew.types import Group, Turn


def to_rows(
    groups: Sequence[Group],
    turn_advantage: np.ndarray,
    token_advantage: np.ndarray | None = None,
    merge_prefix: bool = False,
) -> list[TokenRow]:
    """Rows in (group, episode, turn) order, matching ``CreditInput.from_groups``.

    Turns with no action tokens (an episode that ended before sampling) produce no row.
    """
    rows: list[TokenRow] = []
    turn_i, token_i, episode_id = 0, 0, 0
    for group in groups:
        for episode in group.episodes:
            pieces = []
            for turn in episode.turns:
                n = len(turn.action_ids)
                if token_advantage is not None:
                    adv = [float(x) for x in token_advantage[token_i : token_i + n]]
                else:
                    adv = [float(turn_advantage[turn_i])] * n
                pieces.append((turn, adv))
                turn_i, token_i = turn_i + 1, token_i + n
            rows += _episode_rows(pieces, episode_id, merge_prefix)
            episode_id += 1
    return rows


def _episode_rows(pieces: list[tuple[Turn, list[float]]], episode_id: int, merge: bool) -> list[TokenRow]:
    rows: list[TokenRow] = []
    full: list[int] = []
    for turn, adv in pieces:
        if not turn.action_ids:
            continue
        prompt, action = list(turn.prompt_ids), list(turn.action_ids)
        if merge and rows and prompt[: len(full)] == full:
            last = rows[-1]
            spans = [*last.spans, (prompt[len(full) :], False), (action, True)]
            rows[-1] = TokenRow(
                [s for s in spans if s[0]],
                last.advantages + adv,
                last.old_logprobs + list(turn.behavior_logprobs),
                episode_id,
                last.turns + 1,
            )
        else:
            rows.append(TokenRow([(prompt, False), (action, True)], adv, list(turn.behavior_logprobs), episode_id))
        full = prompt + action
    return rows
