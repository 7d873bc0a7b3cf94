"""Torch records: packing (prompt, action) token rows into padded tensors with exact loss masks.

Shapes: ``B`` rows, ``T`` tokens. A row is ``prompt_ids + action_ids`` (right padded); position
``t`` of ``action_mask`` is 1 when token ``t`` is a sampled action token, which is scored by the
logits at ``t - 1``. Several action spans per row are allowed (merged multi-turn rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

# How token losses become one number, and the unit of the sequence aggregations: declared once here, read by
# the config (``objective.aggregation``, ``objective.weighting``), the objectives (``aggregate``) and ``loss_units``.
Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const"]
Weighting = Literal["episode", "segment", "turn", "row"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)


@dataclass(frozen=True)
class PackedRows:
    """Right-padded token rows."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 1 on real tokens
    action_mask: torch.Tensor  # (B, T) float, 1 on sampled action tokens


def pack_rows(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> PackedRows:
    """Pack ``(prompt_ids, action_ids)`` pairs; the mask covers exactly the action tokens."""
    return pack_spans([[(list(p), False), (list(a), True)] for p, a in rows], pad_id)


def pack_spans(rows: Sequence[Sequence[tuple[list[int], bool]]], pad_id: int) -> PackedRows:
    """Pack rows given as ``[(ids, is_action), ...]`` spans (used by merged multi-turn rows)."""
    flat = [[t for ids, _ in spans for t in ids] for spans in rows]
    flags = [[float(act) for ids, act in spans for _ in ids] for spans in rows]
    width = max((len(r) for r in flat), default=0)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    action = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (ids, flag) in enumerate(zip(flat, flags)):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        action[i, : len(ids)] = torch.tensor(flag, dtype=torch.float32)
    if width and bool(action[:, 0].any()):
        raise ValueError("an action span cannot start a row: it needs at least one prompt token before it")
    return PackedRows(input_ids, attention, action)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts for batched generation: returns ``(input_ids, attention_mask)``, (B, T)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids, mask


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding: 0, 1, ... over the real tokens of each row."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class TokenRow:
    """One training row: spans of ``(ids, is_action)``; per action token its advantage, its behaviour log-prob
    (the rollout engine's) and, once the learner recomputed them, its old log-prob (the ratio's denominator;
    None: the behaviour log-prob serves)."""

    spans: list[tuple[list[int], bool]]
    advantages: list[float]
    behavior_logprobs: list[float]
    episode: int
    turns: int = 1
    old_logprobs: list[float] | None = None  # recomputed by the learner (``Learner.recompute_old_logprobs``)
    segment: int = 0  # index of the row's context segment within its episode (see rollout.batch)
    values: list[float] | None = None  # per action token, the value head's V when credit ran (a critic run)
    value_targets: list[float] | None = None  # per action token, the value head's regression target
    clip_scales: list[float] | None = None  # per action token, a factor on the clip range (A^2TGPO's adaptive clip)
    loss_weights: list[float] | None = None  # per action token, 0 leaves it out of the loss and its counts (D³S)
    teacher_logprobs: list[float] | None = None  # per action token, a distillation teacher's (NaN: not distilled)

    @property
    def ratio_logprobs(self) -> list[float]:
        """The old log-probs the ratio divides by: the recomputed ones, else the behaviour ones."""
        return self.behavior_logprobs if self.old_logprobs is None else self.old_logprobs

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenRow:
        """A row from ``dataclasses.asdict``, also one saved before the two log-prob fields were named for what
        they hold (then ``old_logprobs`` held the engine's and ``behavior_logprobs`` was None until recomputed)."""
        d = {**d, "spans": [(list(ids), bool(act)) for ids, act in d["spans"]]}
        if d.get("behavior_logprobs") is None:
            d["behavior_logprobs"], d["old_logprobs"] = d.get("old_logprobs"), None
        return cls(**d)

    @property
    def n_tokens(self) -> int:
        return sum(len(ids) for ids, _ in self.spans)


@dataclass(frozen=True)
class PackedBatch:
    """Rows packed for the learner, all (B, T)."""

    rows: PackedRows
    advantages: torch.Tensor
    old_logprobs: torch.Tensor  # (B, T), the ratio's denominator: recomputed by the learner, else behaviour's
    episode_ids: torch.Tensor  # (B,)
    behavior_logprobs: torch.Tensor  # (B, T), the rollout engine's; equals old_logprobs unless recomputed
    values: torch.Tensor | None = None  # (B, T), the value head's V when credit ran (rows with a critic)
    value_targets: torch.Tensor | None = None  # (B, T), its targets
    clip_scale: torch.Tensor | None = None  # (B, T), a factor on each token's clip range (adaptive clipping)
    loss_weights: torch.Tensor | None = None  # (B, T), a weight on each action token's loss (token down-sampling)
    teacher_logprobs: torch.Tensor | None = None  # (B, T), a distillation teacher's log-probs (NaN: not distilled)

    @property
    def loss_mask(self) -> torch.Tensor:
        """The action mask times the rows' loss weights: the tokens the aggregation counts."""
        mask = self.rows.action_mask
        return mask if self.loss_weights is None else mask * self.loss_weights

    @property
    def lengths(self) -> list[int]:
        """Real tokens of each row."""
        return [int(n) for n in self.rows.attention_mask.sum(1).tolist()]

    def select(self, indices: Sequence[int]) -> PackedBatch:
        """Rows ``indices`` (in that order), trimmed to their longest: a microbatch without re-packing."""
        index = torch.tensor(list(indices), dtype=torch.long)
        width = int(self.rows.attention_mask[index].sum(1).max()) if len(index) else 0

        def take(t: torch.Tensor) -> torch.Tensor:
            return t[index][:, :width]

        rows = PackedRows(take(self.rows.input_ids), take(self.rows.attention_mask), take(self.rows.action_mask))
        return PackedBatch(
            rows, take(self.advantages), take(self.old_logprobs), self.episode_ids[index], take(self.behavior_logprobs),
            None if self.values is None else take(self.values),
            None if self.value_targets is None else take(self.value_targets),
            None if self.clip_scale is None else take(self.clip_scale),
            None if self.loss_weights is None else take(self.loss_weights),
            None if self.teacher_logprobs is None else take(self.teacher_logprobs),
        )  # fmt: skip


def pack_batch(rows: Sequence[TokenRow], pad_id: int) -> PackedBatch:
    """Pack rows; advantages and old log-probs land exactly on the action-mask positions."""
    packed = pack_spans([r.spans for r in rows], pad_id)
    adv = torch.zeros_like(packed.action_mask)
    old = torch.zeros_like(packed.action_mask)
    where = packed.action_mask.bool()
    adv[where] = torch.tensor([a for r in rows for a in r.advantages], dtype=adv.dtype)
    old[where] = torch.tensor([o for r in rows for o in r.ratio_logprobs], dtype=old.dtype)
    behavior = old.clone()
    behavior[where] = torch.tensor([b for r in rows for b in r.behavior_logprobs], dtype=old.dtype)
    episodes = torch.tensor([r.episode for r in rows], dtype=torch.long)
    values = _per_action(packed, [r.values for r in rows])
    targets = _per_action(packed, [r.value_targets for r in rows])
    scales = _per_action(packed, [r.clip_scales for r in rows])
    weights = _per_action(packed, [r.loss_weights for r in rows], missing=1.0)  # rows not down-sampled count whole
    teacher = _per_action(packed, [r.teacher_logprobs for r in rows], missing=float("nan"))  # others: not distilled
    return PackedBatch(packed, adv, old, episodes, behavior, values, targets, scales, weights, teacher)


def _per_action(
    packed: PackedRows, per_row: Sequence[list[float] | None], missing: float | None = None
) -> torch.Tensor | None:
    """(B, T) with each row's per-action-token values at its action positions. A row without them: None for the
    batch, or with ``missing`` the value ``missing`` at its tokens (None where no row has them)."""
    if not per_row or all(v is None for v in per_row) or (missing is None and any(v is None for v in per_row)):
        return None
    lengths = packed.action_mask.sum(dim=1).long().tolist()
    values = [x for v, n in zip(per_row, lengths) for x in (v if v is not None else [missing] * n)]
    out = torch.zeros_like(packed.action_mask)
    out[packed.action_mask.bool()] = torch.tensor(values, dtype=out.dtype)
    return out


def loss_units(rows: Sequence[TokenRow], weighting: str) -> torch.Tensor | None:
    """Per-token unit ids (B, T) for ``objective.weighting`` (None: ``row``, each row its own unit).

    ``episode``: the row's episode; ``segment``: its (episode, segment); ``turn``: each action span
    (one turn, also inside a merged row) is a unit. Only action positions matter; the rest get -1.
    """
    if weighting == "row":
        return None
    if weighting not in WEIGHTINGS:
        raise ValueError(f"objective.weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
    units: dict[tuple[int, int], int] = {}
    out: list[list[int]] = []
    for row in rows:
        ids: list[int] = []
        for span, is_action in row.spans:
            # turn: -len(units) - 1 is a key no span has used, so each action span opens its own unit
            key = (row.episode, {"episode": 0, "segment": row.segment, "turn": -len(units) - 1}[weighting])
            ids += [units.setdefault(key, len(units)) if is_action else -1] * len(span)
        out.append(ids)
    width = max((len(r) for r in out), default=0)
    return torch.tensor([r + [-1] * (width - len(r)) for r in out], dtype=torch.long)
