"""Policy surrogates: PPO-clip (+ clip-higher, dual-clip), LOOP clip, GSPO, CTPO, Hölder.

Every function maps ``(logp, old_logp, advantages, mask)``, all (B, T), to a per-token loss
(B, T) (the quantity minimised, zero at masked positions) and detached metrics.

**Spans.** A *span* is a maximal run of action positions (``mask`` nonzero) within a row: one turn's
action tokens. A per-turn row has one span; a ``train.merge_prefix`` row holds several turns of an
episode, one span each. The sequence-level objectives (GSPO, Hölder, CTPO) reduce over a span,
never over a whole row, so a merged row gives the same per-token losses as its per-turn rows.
Contract with the row builder (``clew.rollout.batch``): two turns' action spans in one row are
separated by at least one non-action token (mask 0); turns that touched would read as one span.

Span reductions view the (B, T) batch as (B, K, T), K the most spans in any row: slice k keeps
only the k-th span's tokens, so each span is reduced exactly as a row of its own would be (same
reductions, same summation order): a row with one span gives the row formula bit-for-bit (checked on
CPU against the row-level implementation).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
LOG_RATIO_LIMIT = 20.0


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over ``mask``; 0 for an empty mask (never NaN)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def safe_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """log(pi/pi_old) clamped to +-20, zero at masked and non-finite positions.

    Returns ``(log_ratio, bad)`` with ``bad`` (B, T) marking valid tokens whose inputs were
    non-finite (they get a zero loss and are counted in ``policy/nonfinite_tokens``).
    """
    raw = logp - old_logp
    bad = ~torch.isfinite(raw) & mask.bool()
    keep = mask.bool() & ~bad
    return torch.where(keep, raw, torch.zeros_like(raw)).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT), bad


def _ratio_metrics(log_ratio: Tensor, mask: Tensor, bad: Tensor) -> dict[str, Tensor]:
    lr = log_ratio.detach()
    ratio = lr.exp()
    valid = mask.bool()
    big = torch.tensor(torch.finfo(lr.dtype).max, dtype=lr.dtype)
    return {
        "policy/approx_kl": masked_mean(ratio - 1 - lr, mask),
        "policy/ratio_mean": masked_mean(ratio, mask),
        "policy/ratio_max": torch.where(valid, ratio, -big).max() if valid.any() else torch.ones(()),
        "policy/ratio_min": torch.where(valid, ratio, big).min() if valid.any() else torch.ones(()),
        "policy/log_ratio_clamped": ((lr.abs() >= LOG_RATIO_LIMIT) & valid).sum().to(lr.dtype),
        "policy/nonfinite_tokens": bad.sum().to(lr.dtype),
    }


def clipped_surrogate(
    ratio: Tensor, advantages: Tensor, low: Tensor | float, high: Tensor | float, dual_clip: float | None
) -> tuple[Tensor, Tensor, Tensor]:
    """max(-A r, -A clip(r, low, high)), then min(., -A c) where A < 0. Returns (loss, clipped, dual)."""
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, low, high)  # type: ignore[arg-type]
    loss = torch.maximum(unclipped, clipped)
    was_clipped = clipped > unclipped
    dual = torch.zeros_like(was_clipped)
    if dual_clip is not None:
        cap = -advantages * dual_clip
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(advantages < 0, torch.minimum(loss, cap), loss)
    return loss, was_clipped, dual


def ppo_clip(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    clip_scale: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with clip-higher and dual-clip.

    Schulman et al., "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), Eq. 7, with
    decoupled bounds [1 - clip_low, 1 + clip_high] (DAPO clip-higher, arXiv 2503.14476, Eq. 10) and
    dual-clip for A < 0 (Ye et al., arXiv 1912.09729, Eq. 5): loss = min(loss, -A c), c > 1.
    Defaults follow verl: 0.2 / 0.2, dual-clip off (verl's c is 3.0; the paper's value is unconfirmed).
    ``clip_scale`` (B, T): each token's bounds become [1 - s clip_low, 1 + s clip_high] (A^2TGPO's adaptive
    turn-level clipping; set by the credit estimator, not by config).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    high = clip_low if clip_high is None else clip_high
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    s = 1.0 if clip_scale is None else clip_scale
    loss, clipped, dual = clipped_surrogate(log_ratio.exp(), advantages, 1 - s * clip_low, 1 + s * high, dual_clip)
    valid = mask * ~bad
    metrics = _ratio_metrics(log_ratio, mask, bad)
    metrics["policy/clipfrac"] = masked_mean(clipped.to(logp.dtype), valid).detach()
    metrics["policy/dual_clipfrac"] = masked_mean(dual.to(logp.dtype), valid).detach()
    return loss * valid, metrics


def loop_clip(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, epsilon: float = 0.1
) -> tuple[Tensor, dict[str, Tensor]]:
    """LOOP's per-token PPO with the ratio window [1/(1+eps), 1+eps].

    Chen et al., "Reinforcement Learning for Long-Horizon Interactive LLM Agents"
    (arXiv 2502.01600), section 4 / ``_ppo_loss``: objective min(r A, g(A)) with g(A) = (1+eps) A for
    A >= 0 and A / (1+eps) otherwise. Default eps 0.1.
    """
    return ppo_clip(logp, old_logp, advantages, mask, clip_low=1 - 1 / (1 + epsilon), clip_high=epsilon)


def _row_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over the last dim, (B, T) -> (B,) or (B, K, T) -> (B, K); 0 where empty."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def span_ids(mask: Tensor) -> Tensor:
    """(B, T) long: 0 outside action spans, k on the row's k-th span (1-based).

    A span is a maximal run of ``mask != 0`` positions within a row (see the module docstring).
    """
    on = mask != 0
    before = torch.zeros_like(on)
    before[:, 1:] = on[:, :-1]
    starts = (on & ~before).long()
    return torch.where(on, starts.cumsum(-1), torch.zeros_like(starts))


def span_members(mask: Tensor) -> Tensor:
    """(B, K, T) bool, ``[b, k, t]`` true when token t lies in row b's (k+1)-th span; K >= 1."""
    ids = span_ids(mask)
    n_spans = max(int(ids.max()), 1) if ids.numel() else 1
    return ids[:, None, :] == torch.arange(1, n_spans + 1, device=ids.device)[None, :, None]


def span_to_tokens(per_span: Tensor, members: Tensor) -> Tensor:
    """Place a (B, K) per-span value on every token of its span, (B, T); 0 outside spans."""
    value = per_span[..., None]  # (B, K, 1)
    return torch.where(members, value, torch.zeros_like(value)).sum(1)


def span_cumsums(log_ratio: Tensor, valid: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    """Running (count, sum of log r) over valid tokens, restarting at each span, both (B, T).

    Both are 0 outside spans; each span's cumsum starts from exact zeros, as a row of its own would.
    """
    in_span = valid[:, None, :] * members  # (B, K, T)
    zero = torch.zeros_like(in_span)
    count = torch.where(members, in_span.cumsum(-1), zero).sum(1)
    total = torch.where(members, (log_ratio[:, None, :] * in_span).cumsum(-1), zero).sum(1)
    return count, total


def gspo(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Group Sequence Policy Optimization, token form, one sequence per span (turn).

    Zheng et al., "Group Sequence Policy Optimization" (arXiv 2507.18071), Eq. 5-7:
    s_i = exp(mean_t log r_{i,t}) over span i's valid tokens; per token s_{i,t} = sg[s_i] pi/sg[pi]
    (GSPO-token, equal in value to s_i); loss = max(-A s, -A clip(s, 1 - clip_low, 1 + clip_high));
    log s clamped at 10 (verl). Use with ``seq_mean_token_mean`` aggregation (verl forces it).
    Defaults 3e-4 / 4e-4 (paper via a third-party check and verl's example, unconfirmed against the
    PDF). ``policy/seq_ratio_mean`` is the mean of s_i over spans with valid tokens.
    """
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    valid = mask * ~bad
    members = span_members(mask)  # (B, K, T)
    in_span = valid[:, None, :] * members
    seq_log_ratio = _row_mean(log_ratio.detach()[:, None, :], in_span)  # (B, K)
    log_s = (logp - logp.detach() + span_to_tokens(seq_log_ratio, members)).clamp(max=10.0)
    loss, clipped, _ = clipped_surrogate(log_s.exp(), advantages, 1 - clip_low, 1 + clip_high, None)
    metrics = _ratio_metrics(log_ratio, mask, bad)
    metrics["policy/clipfrac"] = masked_mean(clipped.to(logp.dtype), valid).detach()
    metrics["policy/seq_ratio_mean"] = masked_mean(seq_log_ratio.exp(), in_span.sum(-1) > 0)
    return torch.where(valid.bool(), loss, torch.zeros_like(loss)), metrics


def ctpo(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.025,
    clip_high: float = 0.05,
    clip_dual: float = 0.05,
    power: float = 0.5,
    geometric_mean: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cumulative Token Policy Optimization with position-adaptive log-space clipping.

    Zhang et al., "Rethinking Importance Sampling in LLM Policy Optimization: A Cumulative Token
    Perspective" (arXiv 2605.07331), code ``cum-token-cumprod-la``: S_t = sum_{j <= t} log r_j
    (or its mean with ``geometric_mean``); log rho_t = sg[S_t] + log pi_t - sg[log pi_t] (max 10);
    clip log rho to [-clip_low t^p, clip_high t^p] with t the 1-based position among valid tokens;
    dual-clip at exp(clip_dual t^p) for A < 0. Defaults 0.025 / 0.05 / 0.05, p = 0.5.
    **Unconfirmed**: the paper text's scaling statement (the code uses t^0.5).

    Multi-turn: S_t and t restart at each span, so the prefix is the *current turn's* action
    tokens, what a per-turn row computes (merged rows == per-turn rows). The paper defines the
    prefix over one response's tokens and does not say what it means across turns (unconfirmed).
    Note its recipe (``ctpo.sh``) trains multi-turn tool use in verl, where one response holds all
    turns with tool outputs masked; there the released code's cumsum runs across turns.
    """
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    valid = mask * ~bad
    position, prefix = span_cumsums(log_ratio.detach(), valid, span_members(mask))
    if geometric_mean:
        prefix = prefix / position.clamp(min=1)
    log_rho = (prefix.detach() + logp - logp.detach()).clamp(max=10.0)
    scale = position.clamp(min=1) ** power
    clipped_log = torch.maximum(torch.minimum(log_rho, clip_high * scale), -clip_low * scale)
    unclipped, clipped = -advantages * log_rho.exp(), -advantages * clipped_log.exp()
    loss = torch.maximum(unclipped, clipped)
    loss = torch.where(advantages < 0, torch.minimum(loss, -advantages * (clip_dual * scale).exp()), loss)
    metrics = _ratio_metrics(log_ratio, mask, bad)
    metrics["policy/clipfrac"] = masked_mean((clipped > unclipped).to(logp.dtype), valid).detach()
    return torch.where(valid.bool(), loss, torch.zeros_like(loss)), metrics


def power_mean_ratio(log_ratio: Tensor, mask: Tensor, p: float) -> Tensor:
    """Hölder mean of token ratios over the last dim: (mean_t r^p)^(1/p); p -> 0 is geometric.

    (B, T) -> (B,), or (B, K, T) -> (B, K) per span; 1 where the mask is empty.
    """
    if abs(p) < 1e-6:
        return _row_mean(log_ratio, mask).exp()
    count = mask.sum(-1).clamp(min=1)
    # log-sum-exp form keeps r^p finite: log mean r^p = logsumexp(p log r) - log n
    scaled = torch.where(mask.bool(), p * log_ratio, torch.full_like(log_ratio, -torch.inf))
    log_mean = torch.logsumexp(scaled, dim=-1) - count.log()
    log_mean = torch.where(mask.sum(-1) > 0, log_mean, torch.zeros_like(log_mean))
    return (log_mean / p).exp()


def holder(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    p: float = 1.0,
    clip: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Hölder Policy Optimisation: a power-mean sequence ratio per span (turn), clipped PPO-style.

    Chen et al., "Hölder Policy Optimisation" (arXiv 2605.12058), code ``critic_type_modify=holder``:
    rho_i = ((1/|o_i|) sum_t r_t^p)^(1/p) over span i's valid tokens (p -> 0 geometric, p = 1
    arithmetic); l_i = max(-A_i rho_i, -A_i clip(rho_i, 1 - clip, 1 + clip)). The span loss l_i is
    placed on each of its valid tokens, so ``seq_mean_token_mean`` aggregation gives mean_i l_i as
    in the code. A_i is the span's mean token advantage. The released script anneals p from 2 to -2
    over 500 steps (a schedule is the caller's; whether the paper's main runs use it is unconfirmed).
    ``policy/clipfrac`` and ``policy/seq_ratio_mean`` are over spans with valid tokens.
    """
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    valid = mask * ~bad
    members = span_members(mask)  # (B, K, T)
    in_span = valid[:, None, :] * members
    rho = power_mean_ratio(log_ratio[:, None, :], in_span, p)  # (B, K)
    adv = _row_mean(advantages[:, None, :], in_span)
    loss, clipped, _ = clipped_surrogate(rho, adv, 1 - clip, 1 + clip, None)
    metrics = _ratio_metrics(log_ratio, mask, bad)
    present = in_span.sum(-1) > 0
    metrics["policy/clipfrac"] = masked_mean(clipped.to(logp.dtype), present).detach()
    metrics["policy/seq_ratio_mean"] = masked_mean(rho.detach(), present)
    return span_to_tokens(loss, members) * valid, metrics
