"""Loss aggregation: how per-token losses become one scalar, and how turns/episodes are weighted.

Modes (verl ``agg_loss`` names in brackets; shared/reference/objectives.md section 2):

- ``token_mean`` [token-mean]: sum(m l) / sum(m). Splitting rows never changes it.
- ``seq_mean_token_mean`` [seq-mean-token-mean]: mean over units of (sum_t m l / |o|).
- ``seq_mean_token_sum`` [seq-mean-token-sum]: mean over units of sum_t m l.
- ``seq_sum_const`` [seq-mean-token-sum-norm; Dr.GRPO]: sum(m l) / const, const defaults to the
  padded width T; pass a true constant (e.g. max new tokens) for Dr.GRPO (arXiv 2503.20783), and
  ``const = B * L_max`` to match the oat code's extra 1/B.

A *unit* is a row with ``weighting="row"``. With ``weighting="episode"`` the unit is an episode:
its rows' token sums and counts are pooled first, so an episode split into many turn rows weighs
exactly what one merged row would, and the number of turns never becomes a loss weight. Empty
units (no valid token) are skipped; an all-empty batch gives 0 with zero gradient.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const")
WEIGHTINGS = ("row", "episode")


def aggregate(
    per_token_loss: Tensor,
    mask: Tensor,
    mode: str,
    *,
    episode_ids: Tensor | None = None,
    weighting: str = "row",
    const: float | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"aggregation mode must be one of {list(MODES)}, got {mode!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    loss = torch.where(mask.bool(), per_token_loss, torch.zeros_like(per_token_loss))
    if mode == "token_mean":
        return loss.sum() / mask.sum().clamp(min=1)
    if mode == "seq_sum_const":
        denom = float(mask.shape[-1]) if const is None else float(const)
        if denom <= 0:
            raise ValueError(f"seq_sum_const needs const > 0, got {const}")
        return loss.sum() / denom
    sums, counts = _unit_totals(loss.sum(-1), mask.sum(-1), episode_ids, weighting)
    present = counts > 0
    per_unit = sums / counts.clamp(min=1) if mode == "seq_mean_token_mean" else sums
    return (per_unit * present).sum() / present.sum().clamp(min=1)


def _unit_totals(
    row_sums: Tensor, row_counts: Tensor, episode_ids: Tensor | None, weighting: str
) -> tuple[Tensor, Tensor]:
    if weighting == "row":
        return row_sums, row_counts
    if episode_ids is None:
        raise ValueError("weighting='episode' needs episode_ids (one id per row)")
    _, unit = torch.unique(episode_ids, return_inverse=True)
    n = int(unit.max()) + 1 if unit.numel() else 0
    sums = torch.zeros(n, dtype=row_sums.dtype, device=row_sums.device).index_add(0, unit, row_sums)
    counts = torch.zeros(n, dtype=row_counts.dtype, device=row_counts.device).index_add(0, unit, row_counts)
    return sums, counts
