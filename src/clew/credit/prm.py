"""Step credit from an implicit process reward model learned online: OPRL (released as iStar).

The trainer keeps a copy of the policy as the PRM, updates it every iteration with a trajectory-level DPO loss on
the group's better and worse episodes, and scores each turn's action under it against the old policy
(``CreditInput.prm_logratio``); the estimator turns those log-ratios into step rewards and mixes their
group-relative advantage with the episode's.
"""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, check_choice, register
from clew.credit.functional import dense_ids, per_episode, rewards_with_outcome, segment_mean_std

Array = np.ndarray

STEP_BASELINES = ("all", "first")


def rloo(values: Array, ids: Array, include: Array | None = None) -> Array:
    """RLOO-style advantage n / (n - 1) * (x - mean) per segment, mean and n over the ``include``d entries (all by
    default); a segment with one such entry leaves its values unchanged (iStar's ``episode_rloo_reward``)."""
    n_ids = int(ids.max()) + 1 if ids.size else 0
    mask = np.ones(values.size, dtype=bool) if include is None else include
    mean, _, count = segment_mean_std(values[mask], ids[mask], n_ids)
    n = count[ids]
    return np.where(n > 1, n / np.maximum(n - 1, 1) * (values - mean[ids]), values)


@register(
    "oprl", needs_group=True, needs_implicit_prm=True,
    summary="implicit PRM trained online by trajectory DPO; its step log-ratios as step rewards, RLOO, + episode",
)  # fmt: skip
def oprl(
    inp: CreditInput, *, beta: float = 0.05, step_weight: float = 1.0, step_baseline: str = "all",
    prm_lr: float | None = None,
) -> Credit:  # fmt: skip
    """OPRL: episode RLOO plus the RLOO of implicit step rewards from a PRM trained alongside the policy.

    "Online Process Reward Learning for Agentic Reinforcement Learning" / "Agentic RL with Implicit Step
    Rewards" (arXiv 2509.19199); the formulas follow the released code (iStar, ``compute_istar_rloo_advantage``;
    the shared notes' section 19). The PRM pi_phi starts as a copy of the policy and is updated every iteration,
    before credit, by one step of trajectory DPO (``clew.trainer.prm``: the group's pairs of a better and a worse
    episode, the old policy as the reference, the same beta). The step reward of turn t is
    r_t = beta * sum_{tokens of a_t} [log pi_phi(tok) - log pi_old(tok)] (``CreditInput.prm_logratio`` holds the
    sum). A^E = n/(n-1) (R - mean_G(R)) over the group's episodes (RLOO; a group of one keeps R); A^S the same
    formula over the group's step rewards; A_t = A^E + ``step_weight`` * A^S_t. No extra rollouts.

    ``step_baseline``: the code puts only the first step of each trajectory into a group's step baseline (its
    ``seen_pairs`` deduplication), which the shared notes call a quirk; clew pools every step of the group
    (``"all"``, the default) and reproduces the code with ``"first"``. ``prm_lr`` (None: ``train.lr``) is the
    PRM's learning rate, read by the trainer.

    Worked example (credit.md section 19, ``"first"``): G = 2, R = [1, 0], summed log-ratios [2.0, -1.0] and
    [0.5, 4.0] give r = [0.1, -0.05] and [0.025, 0.2]; A^E = +-1; baseline (0.1 + 0.025) / 2 = 0.0625, times 2:
    A^S = [0.075, -0.225] and [-0.075, 0.275]; A = [1.075, 0.775] and [-1.075, -0.725].
    """
    check_choice("step_baseline", step_baseline, STEP_BASELINES)
    assert inp.prm_logratio is not None
    row_ep, ep_group, outcome = per_episode(inp)
    episode_adv = rloo(outcome, dense_ids(ep_group)[0])
    step_reward = beta * np.nan_to_num(inp.prm_logratio, nan=0.0)
    include = inp.turn == 0 if step_baseline == "first" else None
    step_adv = rloo(step_reward, dense_ids(inp.group)[0], include)
    diagnostics = {
        "credit/prm_step_reward_mean": float(step_reward.mean()) if step_reward.size else 0.0,
        "credit/prm_step_reward_abs_mean": float(np.abs(step_reward).mean()) if step_reward.size else 0.0,
    }
    return Credit(episode_adv[row_ep] + step_weight * step_adv, rewards_with_outcome(inp), diagnostics=diagnostics)
