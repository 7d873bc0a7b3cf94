"""Policy surrogates: PPO-clip (+ clip-higher, dual-clip), LOOP clip, GSPO, CTPO, Hölder.

Every function maps ``(logp, old_logp, advantages, mask)``, all (B, T), to a per-token loss
(B, T) (the quantity minimised, zero at masked positions) and detached metrics.
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
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with clip-higher and dual-clip.

    Schulman et al., "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), Eq. 7, with
    decoupled bounds [1 - clip_low, 1 + clip_high] (DAPO clip-higher, arXiv 2503.14476, Eq. 10) and
    dual-clip for A < 0 (Ye et al., arXiv 1912.09729, Eq. 5): loss = min(loss, -A c), c > 1.
    Defaults follow verl: 0.2 / 0.2, dual-clip off (verl's c is 3.0; the paper's value is unconfirmed).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    high = clip_low if clip_high is None else clip_high
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    loss, clipped, dual = clipped_surrogate(log_ratio.exp(), advantages, 1 - clip_low, 1 + high, dual_clip)
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
    """(B,) masked mean of each row; 0 for empty rows."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def gspo(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Group Sequence Policy Optimization, token form.

    Zheng et al., "Group Sequence Policy Optimization" (arXiv 2507.18071), Eq. 5-7:
    s_i = exp(mean_t log r_{i,t}); per token s_{i,t} = sg[s_i] pi/sg[pi] (GSPO-token, equal in value
    to s_i); loss = max(-A s, -A clip(s, 1 - clip_low, 1 + clip_high)); log s clamped at 10 (verl).
    Use with ``seq_mean_token_mean`` aggregation (verl forces it). Defaults 3e-4 / 4e-4 (paper via
    a third-party check and verl's example, unconfirmed against the PDF).
    """
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    valid = mask * ~bad
    seq_log_ratio = _row_mean(log_ratio, valid)[:, None]  # (B, 1)
    log_s = (logp - logp.detach() + seq_log_ratio.detach()).clamp(max=10.0)
    loss, clipped, _ = clipped_surrogate(log_s.exp(), advantages, 1 - clip_low, 1 + clip_high, None)
    metrics = _ratio_metrics(log_ratio, mask, bad)
    metrics["policy/clipfrac"] = masked_mean(clipped.to(logp.dtype), valid).detach()
    metrics["policy/seq_ratio_mean"] = seq_log_ratio.detach().exp().mean()
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
    """
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    valid = mask * ~bad
    position = valid.cumsum(-1)
    prefix = (log_ratio * valid).cumsum(-1)
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
    """(B,) Hölder mean of token ratios: (mean_t r^p)^(1/p); p -> 0 is the geometric mean."""
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
    """Hölder Policy Optimisation: a power-mean sequence ratio, clipped PPO-style.

    Chen et al., "Hölder Policy Optimisation" (arXiv 2605.12058), code ``critic_type_modify=holder``:
    rho_i = ((1/|o_i|) sum_t r_t^p)^(1/p) (p -> 0 geometric, p = 1 arithmetic);
    l_i = max(-A_i rho_i, -A_i clip(rho_i, 1 - clip, 1 + clip)). The sequence loss l_i is placed
    on every valid token, so ``seq_mean_token_mean`` aggregation gives mean_i l_i as in the code.
    A_i is the row's mean token advantage. The released script anneals p from 2 to -2 over 500
    steps (a schedule is the caller's; whether the paper's main runs use it is unconfirmed).
    """
    log_ratio, bad = safe_log_ratio(logp, old_logp, mask)
    valid = mask * ~bad
    rho = power_mean_ratio(log_ratio, valid, p)  # (B,)
    adv = _row_mean(advantages, valid)
    loss, clipped, _ = clipped_surrogate(rho, adv, 1 - clip, 1 + clip, None)
    metrics = _ratio_metrics(log_ratio, mask, bad)
    has_tokens = (valid.sum(-1) > 0).to(logp.dtype)
    metrics["policy/clipfrac"] = ((clipped.to(logp.dtype) * has_tokens).sum() / has_tokens.sum().clamp(min=1)).detach()
    metrics["policy/seq_ratio_mean"] = rho.detach().mean()
    return loss[:, None] * valid, metrics
