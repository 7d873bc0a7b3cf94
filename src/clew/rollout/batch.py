"""Groups + credit -> training rows (``TokenRow``), per turn or merged along shared prefixes.

``merge_prefix``: when a turn's prompt begins with the previous row's full token sequence
(prompt + action) and adds at least one token, the turn is appended to that row as a new span, so
one forward pass scores several actions. Causal attention makes every action token's log-prob
identical to the per-turn row's, so with episode weighting the loss and gradients are the same,
with far fewer tokens. Two action spans of a row are always separated by at least one prompt
token, so sequence-level objectives find each turn as a contiguous run of the action mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from clew.table import TurnTable
from clew.tensors import TokenRow
from clew.types import REPLAYED, Turn


def to_rows(
    table: TurnTable,
    turn_advantage: np.ndarray,
    token_advantage: np.ndarray | None = None,
    merge_prefix: bool = False,
    values: tuple[np.ndarray, np.ndarray] | None = None,
    clip_scale: np.ndarray | None = None,
    teacher_logprobs: np.ndarray | None = None,
) -> list[TokenRow]:
    """Training rows in the table's row order; ``token_advantage`` (K,) wins over ``turn_advantage`` (N,).
    ``values``: (V, targets), (K,) each, the value head's values and regression targets (a critic run).
    ``clip_scale``: (N,), a factor on each turn's clip range (adaptive clipping), on every token of the turn.
    ``teacher_logprobs``: (K,), a distillation teacher's log-prob of every action token (NaN: not distilled).

    Turns with no action tokens (an episode that ended before sampling) and the replayed prefix of a branched episode
    (``info["replayed"]``, trained in its root episode) produce no row.
    """
    table.check_aligned(turn_advantage, token_advantage)
    off = table.token_offsets
    rows: list[TokenRow] = []
    for episode_id, span in enumerate(table.episode_rows()):
        pieces = []
        for i in span:
            if table.turns[i].info.get(REPLAYED):  # a branch's replayed prefix: its root episode trains on it
                continue
            if token_advantage is not None:
                adv = [float(x) for x in token_advantage[off[i] : off[i + 1]]]
            else:
                adv = [float(turn_advantage[i])] * int(off[i + 1] - off[i])
            pieces.append((table.turns[i], adv))
        rows += _episode_rows(pieces, episode_id, merge_prefix)
    trained = table.trained_tokens  # the per-token arrays' slice that the rows hold
    if clip_scale is not None:
        table.check_aligned(clip_scale, what="clip scales")
        per_token = np.repeat(clip_scale, np.diff(off))[trained]
        rows = _with_per_token(rows, per_token, lambda row, part: replace(row, clip_scales=part))
    if teacher_logprobs is not None:
        rows = _with_per_token(rows, teacher_logprobs[trained], lambda row, part: replace(row, teacher_logprobs=part))
    return rows if values is None else _with_values(rows, values[0][trained], values[1][trained])


def _with_per_token(
    rows: list[TokenRow], per_token: np.ndarray, attach: Callable[[TokenRow, list[float]], TokenRow]
) -> list[TokenRow]:
    """``rows`` (in table order, covering every action token once) with their slices of a per-token array."""
    out, start = [], 0
    for row in rows:
        end = start + len(row.advantages)
        out.append(attach(row, per_token[start:end].tolist()))
        start = end
    if start != per_token.shape[0]:
        raise ValueError(f"a per-token array covers {per_token.shape[0]} action tokens, the rows {start}")
    return out


def _with_values(rows: list[TokenRow], values: np.ndarray, targets: np.ndarray) -> list[TokenRow]:
    """``rows`` with their tokens' values and value targets."""
    rows = _with_per_token(rows, values, lambda row, part: replace(row, values=part))
    return _with_per_token(rows, targets, lambda row, part: replace(row, value_targets=part))


def _episode_rows(pieces: list[tuple[Turn, list[float]]], episode_id: int, merge: bool) -> list[TokenRow]:
    """Rows of one episode. A *segment* is a maximal run of turns whose prompts each extend the previous
    prompt + action; a context edit (window, summary, memory, markovian chunk) starts a new one. Merged
    rows never cross a segment boundary, and every row records its segment for ``weighting: segment``."""
    rows: list[TokenRow] = []
    full: list[int] = []
    segment = -1
    for turn, adv in pieces:
        if not turn.action_ids:
            continue
        prompt, action = list(turn.prompt_ids), list(turn.action_ids)
        extends = segment >= 0 and len(prompt) > len(full) and prompt[: len(full)] == full
        segment += 0 if extends else 1
        if merge and extends:
            last = rows[-1]
            spans = [*last.spans, (prompt[len(full) :], False), (action, True)]
            rows[-1] = TokenRow(
                [s for s in spans if s[0]],
                last.advantages + adv,
                last.behavior_logprobs + list(turn.behavior_logprobs),
                episode_id,
                last.turns + 1,
                segment=segment,
            )
        else:
            row = TokenRow([(prompt, False), (action, True)], adv, list(turn.behavior_logprobs), episode_id)
            rows.append(replace(row, segment=segment))
        full = prompt + action
    return rows
