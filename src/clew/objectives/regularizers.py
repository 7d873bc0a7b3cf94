"""Regularisers and corrections: KL to a reference (in the loss), entropy bonus, TIS weights."""

from __future__ import annotations

import torch

Tensor = torch.Tensor
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi, (B, T).

    Schulman, "Approximating KL Divergence" (2020); verl ``kl_penalty``. With d = log pi - log pi_ref:
    k1 = d; k2 = d^2 / 2; k3 = exp(-d) + d - 1 (the "low-variance" estimator; -d clamped to +-20 and
    the result to [-10, 10] as in verl). k1 can be negative per token; k3 is non-negative.
    """
    delta = logp - ref_logp
    if estimator == "k1":
        return delta
    if estimator == "k2":
        return 0.5 * delta**2
    if estimator == "k3":
        kappa = (-delta).clamp(-20, 20)
        return (kappa.exp() - kappa - 1).clamp(-10, 10)
    raise ValueError(f"kl estimator must be one of {list(KL_ESTIMATORS)}, got {estimator!r}")


def teacher_kl(logp: Tensor, teacher_logp: Tensor, mask: Tensor, estimator: str = "k2") -> Tensor:
    """Per-token KL(pi || pi_teacher) estimate (``kl_penalty``) at the action tokens whose teacher log-prob is finite,
    0 elsewhere (B, T): on-policy distillation's loss term (GKD, Agarwal et al., arXiv 2306.13649, section 3, reverse
    KL). A NaN teacher log-prob marks a token not distilled (a quality gate left its episode out). k2's gradient,
    (log pi - log pi_teacher) grad log pi, is the reverse KL's gradient on the student's own samples."""
    gate = torch.isfinite(teacher_logp) & mask.bool()
    kl = kl_penalty(logp, torch.nan_to_num(teacher_logp).to(logp.dtype), estimator)
    return torch.where(gate, kl, torch.zeros_like(kl))


def entropy_bonus(entropy: Tensor, coef: float) -> Tensor:
    """Per-token loss term -coef * H_t (verl ``entropy_coeff``; default 0 there)."""
    return -coef * entropy


def tis_weights(
    old_logp: Tensor, behavior_logp: Tensor, mask: Tensor, cap: float = 2.0, level: str = "token"
) -> Tensor:
    """Truncated importance-sampling weights for rollout/trainer mismatch, detached, (B, T).

    Yao et al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training" (2025):
    w = min(pi_train / pi_rollout, C), C = 2.0 (verl). ``level="sequence"`` uses the product over
    the row's tokens. No lower truncation. Multiply the per-token policy loss by w.
    """
    if cap <= 0:
        raise ValueError(f"tis cap must be > 0, got {cap}")
    log_w = torch.where(mask.bool(), old_logp - behavior_logp, torch.zeros_like(old_logp))
    if level == "sequence":
        log_w = log_w.sum(-1, keepdim=True).expand_as(old_logp)
    elif level != "token":
        raise ValueError(f"tis level must be 'token' or 'sequence', got {level!r}")
    return (log_w.clamp(-20, 20).exp() * mask).clamp(max=cap).detach()


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None = 0.2) -> Tensor:
    """Per-token value-head loss, (B, T): 0.5 (V - R)^2, or with ``clip`` the pessimistic clipped form
    0.5 max((V - R)^2, (V_old + clip(V - V_old, -clip, clip) - R)^2).

    Schulman et al., "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), Eq. 9's squared-error term
    L^VF = (V_theta(s_t) - V_t^targ)^2; the clipping around the values the advantages were computed with is the
    released PPO code's (OpenAI baselines ppo2; TRL ``PPOTrainer``, ``cliprange_value`` 0.2; verl
    ``compute_value_loss``), not an equation of the paper. ``old_values`` are those values, ``returns`` GAE's
    targets A + V_old.
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum(unclipped, (clipped - returns) ** 2)
