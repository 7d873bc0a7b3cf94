"""Trajectory preference losses over whole episodes: DPO on (better, worse) pairs, KTO on desirable and undesirable
episodes. Inputs are each episode's summed action-token log-prob under the policy and under the reference (every
turn of the episode, so a multi-turn trajectory is one sequence), (E,) each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def dpo_loss(
    policy: Tensor, ref: Tensor, pairs: Sequence[tuple[int, int]], beta: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean over pairs (w, l) of -log sigmoid(beta [(pi_w - ref_w) - (pi_l - ref_l)]).

    Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"
    (arXiv 2305.18290), Eq. 7, with y_w, y_l whole trajectories of the same task (trajectory-level DPO, as ETO uses
    it for agents). Metrics: the implicit reward margin beta * [...] and the share of pairs it orders rightly. No
    pairs: 0 with zero gradient.
    """
    if not pairs:
        zero = policy.sum() * 0.0
        return zero, {"preference/margin": zero.detach(), "preference/accuracy": zero.detach()}
    better, worse = (torch.tensor([p[k] for p in pairs], dtype=torch.long) for k in (0, 1))
    margin = beta * ((policy[better] - ref[better]) - (policy[worse] - ref[worse]))
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    metrics = {"preference/margin": margin.mean().detach(), "preference/accuracy": (margin > 0).float().mean()}
    return loss, metrics


def kto_reference_point(policy: Tensor, ref: Tensor) -> Tensor:
    """KTO's z_0 = max(0, KL(pi || ref)), detached, estimated by the batch mean of log pi(y) - log ref(y) over its
    episodes. The paper estimates the KL on mismatched (x, y') pairs of the batch (section 4.1); episodes sampled by
    the policy itself (online, or a run's own rollouts offline) make the plain mean an estimate of that KL without
    pairing a task with another task's trajectory. Unconfirmed as the paper's choice; it is the on-sample estimator."""
    return (policy - ref).mean().clamp(min=0).detach()


def kto_loss(
    policy: Tensor, ref: Tensor, desirable: Tensor, beta: float, desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """Mean over episodes of lambda_D (1 - sigmoid(beta (r - z_0))) for desirable ones and lambda_U (1 - sigmoid(beta
    (z_0 - r))) for undesirable ones, r = log pi(y) - log ref(y).

    Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization" (arXiv 2402.01306), Eq. 8 (the loss
    form of its value function), lambda_D = lambda_U = 1 by default; z_0 from ``kto_reference_point``.
    """
    reward = policy - ref
    z0 = kto_reference_point(policy, ref)
    good = desirable.to(torch.bool)
    per_episode = torch.where(
        good,
        desirable_weight * (1 - torch.sigmoid(beta * (reward - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - reward))),
    )
    loss = per_episode.mean() if per_episode.numel() else policy.sum() * 0.0
    return loss, {"preference/kto_z0": z0, "preference/reward": reward.mean().detach() if reward.numel() else z0}
