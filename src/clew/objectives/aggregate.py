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
    weights = aggregation_weights(mask, mode, episode_ids=episode_ids, weighting=weighting, const=const)
    loss = torch.where(mask.bool(), per_token_loss, torch.zeros_like(per_token_loss))
    return (weights.to(loss.dtype) * loss).sum()


def aggregation_weights(
    mask: Tensor,
    mode: str,
    *,
    episode_ids: Tensor | None = None,
    weighting: str = "row",
    const: float | None = None,
) -> Tensor:
    """The (B, T) token weights w with ``aggregate == sum(w * loss)``.

    Every mode is linear in the loss, so a minibatch's weights can be computed once and sliced
    into microbatches: gradient accumulation is then exact (1 x 8 == 8 x 1).
    """
    if mode not in MODES:
        raise ValueError(f"aggregation mode must be one of {list(MODES)}, got {mode!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    mask = mask.to(torch.float64)
    if mode == "token_mean":
        return mask / mask.sum().clamp(min=1)
    if mode == "seq_sum_const":
        denom = float(mask.shape[-1]) if const is None else float(const)
        if denom <= 0:
            raise ValueError(f"seq_sum_const needs const > 0, got {const}")
        return mask / denom
    unit, n_units = _units(mask.shape[0], episode_ids, weighting, mask.device)
    counts = torch.zeros(n_units, dtype=mask.dtype, device=mask.device).index_add(0, unit, mask.sum(-1))
    n_present = (counts > 0).sum().clamp(min=1)
    if mode == "seq_mean_token_sum":
        return mask / n_present
    return mask / (counts[unit].clamp(min=1) * n_present)[:, None]


def _units(rows: int, episode_ids: Tensor | None, weighting: str, device: torch.device) -> tuple[Tensor, int]:
    if weighting == "row":
        return torch.arange(rows, device=device), rows
    if episode_ids is None:
        raise ValueError("weighting='episode' needs episode_ids (one id per row)")
    _, unit = torch.unique(episode_ids, return_inverse=True)
    return unit, int(unit.max()) + 1 if unit.numel() else 0
