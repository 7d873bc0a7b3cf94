"""Credit from a learned critic: PPO's generalised advantage estimation over the action tokens of each episode."""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, register
from clew.credit.functional import mean_per_row, rewards_with_outcome, segment_discounted_returns, token_rows, whiten

Array = np.ndarray


def token_rewards(inp: CreditInput) -> Array:
    """(K,) each turn's reward (the outcome on the episode's last turn, ``rewards_with_outcome``) on its last action
    token; a turn without action tokens hands its reward to the last action token before it in the episode (none:
    the reward is dropped, the episode having sampled nothing)."""
    assert inp.token_offsets is not None
    off, rewards = inp.token_offsets, rewards_with_outcome(inp)
    out = np.zeros(int(off[-1]))
    last = np.where(np.diff(off) > 0, off[1:] - 1, -1)
    filled = np.maximum.accumulate(last) if last.size else last  # a token-less turn: the latest token before it
    first_token = off[np.flatnonzero(inp.turn == 0)][np.cumsum(inp.turn == 0) - 1]  # of the row's episode
    keep = filled >= first_token
    np.add.at(out, filled[keep], rewards[keep])
    return out


@register("gae", needs_tokens=True, needs_values=True, summary="PPO's GAE over action tokens with a value head")
def gae(inp: CreditInput, *, gamma: float = 1.0, lam: float = 0.95, whiten_advantages: bool = True) -> Credit:
    """Generalised advantage estimation on the critic's values, token by token, jumping over observations.

    Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (arXiv
    1506.02438), Eq. 16: delta_t = r_t + gamma V_{t+1} - V_t and A_t = sum_l (gamma lam)^l delta_{t+l}, computed
    backwards as A_t = delta_t + gamma lam A_{t+1}; the value targets are R_t = A_t + V_t. The LLM form (Ouyang
    et al., arXiv 2203.02155; verl ``compute_gae_advantage_return``): a step is one action token, the turn's
    reward sits on its last token, and the observation tokens between turns are skipped, so V_{t+1} of a turn's
    last token is the value at the next turn's first action token. After the episode's last token V = 0. The
    advantages are then whitened over every action token of the batch (unbiased variance, +1e-8;
    ``whiten_advantages``). Defaults gamma 1, lam 0.95 (TRL's PPOConfig; verl's yaml has lam 1).

    ``CreditInput.value`` holds V at every action token: the value head's output on the hidden state that scores
    the token, computed by the trainer before credit. A cut episode (max turns) bootstraps with 0 past its last
    token, as verl does. Worked example (credit.md section 7): rewards [0, 0, 1], V = [0.5, 0.6, 0.8], gamma 1:
    lam 0.95 gives A = [0.4705, 0.39, 0.2] and R = [0.9705, 0.99, 1.0]; lam 1 gives A = [0.5, 0.4, 0.2].
    """
    assert inp.token_offsets is not None and inp.value is not None
    values, rows = inp.value, token_rows(inp.token_offsets)
    episode = inp.episode[rows]
    same_next = np.r_[episode[1:] == episode[:-1], False] if episode.size else np.zeros(0, dtype=bool)
    next_value = np.where(same_next, np.r_[values[1:], 0.0], 0.0) if values.size else values
    delta = token_rewards(inp) + gamma * next_value - values
    advantage = segment_discounted_returns(delta, episode, gamma * lam)
    targets = advantage + values
    token_adv = whiten(advantage) if whiten_advantages else advantage
    diagnostics = {
        "credit/value_mean": float(values.mean()) if values.size else 0.0,
        "credit/value_target_mean": float(targets.mean()) if targets.size else 0.0,
        "credit/explained_variance": explained_variance(values, targets),
    }
    return Credit(
        turn_advantage=mean_per_row(token_adv, inp.token_offsets),
        turn_return=mean_per_row(targets, inp.token_offsets),
        token_advantage=token_adv,
        diagnostics=diagnostics,
        value=values,
        value_target=targets,
    )


def explained_variance(values: Array, targets: Array) -> float:
    """1 - Var(R - V) / Var(R): how much of the targets' spread the critic accounts for (1 perfect, <= 0 useless)."""
    spread = float(np.var(targets)) if targets.size else 0.0
    return 1.0 - float(np.var(targets - values)) / spread if spread > 0 else 0.0
