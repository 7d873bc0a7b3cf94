"""Turn credit from the policy scored against a counterfactual context: InfoPO's masked observation, PBSD's
answer-conditioned teacher.

The trainer scores the extra contexts before credit (``clew.trainer.credit_inputs``): InfoPO asks how much an
observation changed the policy's next action (the real observation against a placeholder), PBSD how much more
likely each action becomes once the policy is also shown the verified answer.
"""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, register
from clew.credit.functional import (
    broadcast_to_tokens,
    dense_ids,
    mean_per_row,
    per_episode,
    rewards_with_outcome,
    segment_mean_std,
)

Array = np.ndarray

PLACEHOLDER_OBSERVATION = "No information found."  # InfoPO's mask for the observation
PRIVILEGED_HINT = "(Privileged information for scoring only: a verified correct reply is: {gold})"  # PBSD's teacher


def _zscore(values: Array, ids: Array, eps: float) -> tuple[Array, Array]:
    """Per-segment ``(x - mean) / (std + eps)`` (unbiased std; a lone value gives 0) and each segment's std."""
    n = int(ids.max()) + 1 if ids.size else 0
    mean, std, count = segment_mean_std(values, ids, n, unbiased=True)
    z = np.where(count[ids] > 1, (values - mean[ids]) / (std[ids] + eps), 0.0)
    return z, std


@register(
    "infopo", needs_group=True, needs_tokens=True, needs_counterfactual_gain=True,
    summary="information an observation gave the next action (vs a masked observation), gated onto GRPO",
)  # fmt: skip
def infopo(
    inp: CreditInput, *, intrinsic_weight: float = 0.1, gate_temperature: float = 0.05, eps: float = 1e-6
) -> Credit:
    """InfoPO: turn credit from the information each observation carried, fused with the outcome where the outcome
    cannot tell the group's episodes apart.

    "InfoPO: Information-Driven Policy Optimization for User-Centric Agents" (arXiv id not checked; the
    formulas follow the released code, kfq20/InfoPO ``compute_info_grpo_advantage``, credit.md section 14).
    IG_t = (1/|a_{t+1}|) sum_{tokens of a_{t+1}} [log pi(tok | ..., o_t) - log pi(tok | ..., placeholder)]:
    how much the observation o_t that answered turn t moved the policy's next action, against the observation
    replaced by "No information found." (``CreditInput.counterfactual_gain``, scored by the trainer; an
    episode's last turn has no next action and no gain). It is spread evenly over the tokens of a_t.

    - Outcome: A_out = (S - mean_G) / (std_G + eps) per episode, unbiased std; S is the episode's outcome as
      GRPO reads it (the code's "Sum" mode sums the turn rewards, which is clew's outcome unless the env
      reports one apart from its step rewards).
    - Intrinsic: the non-zero per-token gains are z-scored within the group (unbiased; a lone value gives 0);
      zeros stay 0.
    - Fusion per token: A = A_out + beta * gate_g * m * A_int with beta = ``intrinsic_weight``,
      gate_g = sigmoid(-std_G(S) / ``gate_temperature``) (about 0.5 when the group's outcomes are all equal,
      about 0 once they differ) and m = min(1, max(std(A_out) + eps, 1) / (std(A_int) + eps)) over the batch's
      tokens (the intrinsic term is only ever scaled down). The code's decay of beta over epochs defaults to 0
      and is not built. Unlike the code, the placeholder is tokenised at its own length rather than padded or cut
      to the real observation's (clew does not need equal-length batches).

    Worked example (credit.md section 14, G = 3): outcomes [1, 0, 0] give A_out = [1.1547, -0.5774, -0.5774]
    and gate = sigmoid(-0.5774 / 0.05) = 9.66e-6 (the intrinsic term vanishes); outcomes [0, 0, 0] give
    A_out = 0 and gate = 0.5, so intrinsic z-scores of +-1 with m = 1 give A = +-0.05.
    """
    assert inp.token_offsets is not None and inp.counterfactual_gain is not None
    row_ep, ep_group, score = per_episode(inp)  # GRPO's statistics: one outcome per episode
    ep_gid = dense_ids(ep_group)[0]
    outcome_z, outcome_std = _zscore(score, ep_gid, eps)
    row_gid = ep_gid[row_ep]
    gain = np.nan_to_num(inp.counterfactual_gain, nan=0.0)
    counts = np.diff(inp.token_offsets)
    intrinsic = broadcast_to_tokens(gain / np.maximum(counts, 1), inp)
    token_gid = broadcast_to_tokens(row_gid.astype(np.float64), inp).astype(np.int64)
    nonzero = intrinsic != 0
    a_int = np.zeros_like(intrinsic)
    a_int[nonzero] = _zscore(intrinsic[nonzero], token_gid[nonzero], eps)[0]
    a_out = broadcast_to_tokens(outcome_z[row_ep], inp)
    gate = 1.0 / (1.0 + np.exp(outcome_std / gate_temperature))  # sigmoid(-std / tau)
    spread_out, spread_int = (float(x.std(ddof=1)) if x.size > 1 else 0.0 for x in (a_out, a_int))
    m = min(1.0, max(spread_out + eps, 1.0) / (spread_int + eps))
    tokens = a_out + intrinsic_weight * broadcast_to_tokens(gate[row_gid], inp) * m * a_int
    diagnostics = {
        "credit/info_gain_mean": float(gain.mean()) if gain.size else 0.0,
        "credit/info_gate_mean": float(gate.mean()) if gate.size else 0.0,
        "credit/rows_without_counterfactual": _unscored_share(inp.counterfactual_gain, inp),
    }
    return Credit(mean_per_row(tokens, inp.token_offsets), rewards_with_outcome(inp), tokens, diagnostics)


def _unscored_share(column: Array, inp: CreditInput) -> float:
    """The share of rows with a next row in their episode whose counterfactual could not be scored."""
    has_next = np.r_[inp.turn[1:] != 0, False] if inp.n_turns else np.zeros(0, dtype=bool)
    return float(np.isnan(column[has_next]).mean()) if has_next.any() else 0.0


@register(
    "pbsd", needs_group=True, needs_privileged_logratio=True,
    summary="GRPO reweighted over turns by how much the verified answer explains each action (Bayes evidence)",
)  # fmt: skip
def pbsd(
    inp: CreditInput,
    *,
    temperature: float = 1.0,
    hint: str = PRIVILEGED_HINT,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> Credit:
    """PBSD: the group-relative outcome spread over an episode's turns by each turn's share of the Bayes evidence
    for the verified answer.

    "PBSD: Privileged Bayesian Self-Distillation for Long-Horizon Credit Assignment" (2026; only the abstract
    was available: the arXiv id, equations and defaults are **unconfirmed**, and this is the most defensible
    reading of it). Trajectory quality is the posterior-to-prior ratio of the verified answer y*; by Bayes' rule
    log p(y* | x, tau) / p(y* | x) = log p(tau | x, y*) / p(tau | x), and the autoregressive decomposition of the
    right side over the agent's own tokens gives one term per turn,
    d_t = sum_{tokens of a_t} [log pi(tok | h_t, y*) - log pi(tok | h_t)], the privileged answer-conditioned
    teacher (the same policy shown y*) against the student (``CreditInput.privileged_logratio``; the env's
    observations, which do not depend on the policy, cancel). The teacher's prompt is the row's own with ``hint``
    (``{gold}``: the env's gold reply) appended to the message that opens the chat; the trainer reads ``hint``.

    Reweighting (clew's reading): A^GRPO of the episode (its outcome against its group's, unbiased std) is
    spread over its T turns with weights
    w_t = T * softmax_t(sign(A) * d_t / ``temperature``), which average 1, so an episode keeps GRPO's total
    credit: in a success the turns that support y* get more of the credit; in a failure the turns that undermine
    it (d_t < 0) get more of the blame and the evidence-gathering ones less. A turn without a score counts as
    d_t = 0; a one-turn episode is GRPO.

    Worked example (docs/credit.md): a group of two, outcomes 1 and 0 (A = +-0.7071); the success's turns have
    d = [2, 0], the failure's d = [1, -1]: w = 2 * softmax([2, 0]) = [1.7616, 0.2384] and
    2 * softmax([-1, 1]) = [0.2384, 1.7616]; A = [1.2456, 0.1686] and [-0.1686, -1.2456].
    """
    assert inp.privileged_logratio is not None
    row_ep, ep_group, score = per_episode(inp)  # GRPO's statistics: one outcome per episode
    ep_gid = dense_ids(ep_group)[0]
    z, _ = _zscore(score, ep_gid, eps) if scale_by_std else (score - _group_mean(score, ep_gid), None)
    sign = np.sign(z[row_ep])
    logits = sign * np.nan_to_num(inp.privileged_logratio, nan=0.0) / temperature
    weights = _softmax_per_episode(logits, row_ep) * np.bincount(row_ep)[row_ep]
    known = ~np.isnan(inp.privileged_logratio)
    diagnostics = {
        "credit/privileged_logratio_mean": float(inp.privileged_logratio[known].mean()) if known.any() else 0.0,
        "credit/turn_weight_max": float(weights.max()) if weights.size else 0.0,
    }
    return Credit(z[row_ep] * weights, rewards_with_outcome(inp), diagnostics=diagnostics)


def _group_mean(score: Array, ids: Array) -> Array:
    n = int(ids.max()) + 1 if ids.size else 0
    return segment_mean_std(score, ids, n)[0][ids]


def _softmax_per_episode(logits: Array, row_ep: Array) -> Array:
    """(N,) softmax of ``logits`` within each episode (max-shifted)."""
    n = int(row_ep.max()) + 1 if row_ep.size else 0
    top = np.full(n, -np.inf)
    np.maximum.at(top, row_ep, logits)
    e = np.exp(logits - top[row_ep])
    return e / np.bincount(row_ep, weights=e, minlength=n)[row_ep]
