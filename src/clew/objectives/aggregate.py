"""Loss aggregation: how per-token losses become one scalar, and how turns/episodes are weighted.

Modes (verl ``agg_loss`` names in brackets; shared/reference/objectives.md section 2):

- ``token_mean`` [token-mean]: sum(m l) / sum(m). Splitting rows never changes it.
- ``seq_mean_token_mean`` [seq-mean-token-mean]: mean over units of (sum_t m l / |o|).
- ``seq_mean_token_sum`` [seq-mean-token-sum]: mean over units of sum_t m l.
- ``seq_sum_const`` [seq-mean-token-sum-norm; Dr.GRPO]: sum(m l) / const, const defaults to the
  padded width T; pass a true constant (e.g. max new tokens) for Dr.GRPO (arXiv 2503.20783), and
  ``const = B * L_max`` to match the oat code's extra 1/B.

The *unit* of the sequence modes is set by ``units``, integer ids per row (B,) or per token (B, T);
None makes each row a unit. The trainer derives them from ``objective.weighting``
(``clew.tensors.loss_units``): ``episode`` pools an episode's rows, so an episode split into many
turn rows weighs exactly what one merged row would and the number of turns (or of context segments)
never becomes a loss weight; ``segment`` makes each context segment a unit (an episode with three
summaries weighs four times an unedited one, which is what DCPO-style segment credit asks for);
``turn`` makes each action span a unit, inside merged rows too; ``row`` is each training row. Token
sums and counts of a unit are pooled first. Empty units (no valid token) are skipped; an all-empty
batch gives 0 with zero gradient.
"""

from __future__ import annotations

import torch

from clew.tensors import AGGREGATIONS as MODES

Tensor = torch.Tensor


def aggregate(
    per_token_loss: Tensor,
    mask: Tensor,
    mode: str,
    *,
    units: Tensor | None = None,
    const: float | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar (see the module docstring)."""
    weights = aggregation_weights(mask, mode, units=units, const=const)
    loss = torch.where(mask.bool(), per_token_loss, torch.zeros_like(per_token_loss))
    return (weights.to(loss.dtype) * loss).sum()


def aggregation_weights(
    mask: Tensor,
    mode: str,
    *,
    units: Tensor | None = None,
    const: float | None = None,
) -> Tensor:
    """The (B, T) token weights w with ``aggregate == sum(w * loss)``.

    Every mode is linear in the loss, so a minibatch's weights can be computed once and sliced
    into microbatches: gradient accumulation is then exact (1 x 8 == 8 x 1).
    """
    if mode not in MODES:
        raise ValueError(f"aggregation mode must be one of {list(MODES)}, got {mode!r}")
    mask = mask.to(torch.float64)
    if mode == "token_mean":
        return mask / mask.sum().clamp(min=1)
    if mode == "seq_sum_const":
        denom = float(mask.shape[-1]) if const is None else float(const)
        if denom <= 0:
            raise ValueError(f"seq_sum_const needs const > 0, got {const}")
        return mask / denom
    unit = _token_units(mask, units)
    n_units = int(unit.max()) + 1 if unit.numel() else 0
    counts = torch.zeros(n_units, dtype=mask.dtype, device=mask.device).index_add(0, unit.flatten(), mask.flatten())
    n_present = (counts > 0).sum().clamp(min=1)
    if mode == "seq_mean_token_sum":
        return mask / n_present
    return mask / (counts[unit].clamp(min=1) * n_present)


def _token_units(mask: Tensor, units: Tensor | None) -> Tensor:
    """Dense unit ids 0..U-1 per token (B, T); masked-out tokens may hold anything."""
    rows, width = mask.shape
    if units is None:
        units = torch.arange(rows, device=mask.device)
    if units.dim() == 1:
        if units.shape[0] != rows:
            raise ValueError(f"units: {units.shape[0]} row ids for {rows} rows")
        units = units[:, None].expand(rows, width)
    if units.shape != mask.shape:
        raise ValueError(f"units: shape {tuple(units.shape)} for a mask of shape {tuple(mask.shape)}")
    valid = mask.bool()
    dense = torch.zeros_like(units, dtype=torch.long)
    if valid.any():
        _, inverse = torch.unique(units[valid], return_inverse=True)
        dense[valid] = inverse
    return dense
