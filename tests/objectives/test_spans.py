"""Merged multi-turn rows == per-turn rows: span-level GSPO, Hölder and CTPO, for every objective."""

from dataclasses import dataclass

import pytest
import torch

from clew.objectives import aggregation_weights, available, compute, span_ids

D = torch.float64


def t(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=D)


def test_span_ids_number_maximal_runs_per_row() -> None:
    mask = t([[0, 1, 1, 0, 1, 0, 0, 1], [1, 0, 0, 1, 1, 1, 0, 0], [0] * 8])
    expected = [[0, 1, 1, 0, 2, 0, 0, 3], [1, 0, 0, 2, 2, 2, 0, 0], [0] * 8]
    assert span_ids(mask).tolist() == expected


def test_gspo_merged_row_equals_per_turn_rows_by_hand() -> None:
    # Turn 1 log r = [0.2, 0.0] -> mean 0.1 -> s1 = exp(0.1) = 1.105171; turn 2 log r = [-0.1, -0.1]
    # -> s2 = exp(-0.1) = 0.904837. A = 1, clip window [0.5, 1.5] (no clipping): token loss -s, and
    # d loss_t / d logp_t = -A s (GSPO-token). A row-level ratio would give mean(0.2, 0, -0.1, -0.1)
    # = 0 -> s = 1 -> loss -1.0 on all four tokens.
    merged_mask = t([[0, 1, 1, 0, 1, 1]])  # prompt, turn 1, observation, turn 2
    merged = t([[0.0, 0.2, 0.0, 0.0, -0.1, -0.1]]).requires_grad_(True)
    turn_mask = t([[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]])  # turn 2's row: prefix (prompt, turn 1, obs)
    per_turn = t([[0.0, 0.2, 0.0, 0, 0, 0], [0.0, 0.2, 0.0, 0.0, -0.1, -0.1]]).requires_grad_(True)
    expected = t([-1.105171, -1.105171, -0.904837, -0.904837])
    params = {"clip_low": 0.5, "clip_high": 0.5}
    for logp, mask, episodes in ((merged, merged_mask, [0]), (per_turn, turn_mask, [0, 0])):
        loss, metrics = compute("gspo", logp, torch.zeros_like(logp), torch.ones_like(logp), mask, **params)
        torch.testing.assert_close(loss[mask.bool()], expected, atol=1e-6, rtol=0)
        # seq_mean_token_mean, episode weighting: (2 (-1.105171) + 2 (-0.904837)) / 4 = -1.005004
        w = aggregation_weights(mask, "seq_mean_token_mean", units=torch.tensor(episodes))
        total = (w * loss).sum()
        assert total.item() == pytest.approx(-1.005004, abs=1e-6)
        (grad,) = torch.autograd.grad(total, logp)
        torch.testing.assert_close(grad[mask.bool()], expected / 4, atol=1e-6, rtol=0)
        assert metrics["policy/seq_ratio_mean"].item() == pytest.approx(1.005004, abs=1e-6)  # mean of s1, s2


def test_ctpo_prefix_and_position_restart_at_each_turn() -> None:
    # A > 0, p = 0.5, turn 1 log r = [0.03, 0.01], turn 2 log r = [0.04]. Per turn: S = [0.03, 0.04 | 0.04],
    # t = [1, 2 | 1], upper bounds 0.05 sqrt(t) = [0.05, 0.0707 | 0.05] -> nothing clipped, rho = exp(S)
    # = [1.030455, 1.040811 | 1.040811]. One prefix over the row would give S_3 = 0.08, rho 1.083287.
    logp = t([[0.0, 0.03, 0.01, 0.0, 0.04]])
    mask = t([[0, 1, 1, 0, 1]])
    loss, _ = compute("ctpo", logp, torch.zeros_like(logp), torch.ones_like(logp), mask)
    torch.testing.assert_close(-loss[0, mask[0].bool()], t([1.030455, 1.040811, 1.040811]), atol=1e-6, rtol=0)


# Episodes as turns of (observation tokens before the turn, action tokens). Every action span has
# >= 1 non-action token before it, as the row builder guarantees.
EPISODES = [[(2, 3), (1, 2), (3, 4)], [(1, 1)], [(2, 2), (1, 3)]]
# windows wide enough for log r ~ 0.15 N(0, 1) that most tokens keep a gradient and some are clipped
PARAMS: dict[str, dict[str, float]] = {
    "gspo": {"clip_low": 0.05, "clip_high": 0.05},
    "ctpo": {"clip_low": 0.2, "clip_high": 0.2, "clip_dual": 0.2},
    "holder": {"clip": 0.05, "p": 0.5},
}


@dataclass
class Rows:
    logp: torch.Tensor  # (B, T) leaf
    old_logp: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    episode_ids: torch.Tensor  # (B,)


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack (C, L_i) rows into (C, B, T), right padded with zeros."""
    width = max(r.shape[-1] for r in rows)
    return torch.stack([torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows], dim=1)


def _layouts() -> tuple[Rows, Rows]:
    """The same turns as merged rows (one per episode) and as per-turn rows (prefix + one action span)."""
    gen = torch.Generator().manual_seed(0)
    merged, per_turn, merged_ids, turn_ids = [], [], [], []
    for episode, turns in enumerate(EPISODES):
        spans, width = [], 0
        for n_obs, n_act in turns:
            spans.append((width + n_obs, width + n_obs + n_act))
            width += n_obs + n_act
        logp = -1.0 + 0.3 * torch.randn(width, generator=gen, dtype=D)
        old = logp + 0.15 * torch.randn(width, generator=gen, dtype=D)
        adv = torch.randn(width, generator=gen, dtype=D)
        mask = torch.zeros(width, dtype=D)
        for start, end in spans:
            mask[start:end] = 1
            turn_mask = torch.zeros(end, dtype=D)
            turn_mask[start:end] = 1
            per_turn.append(torch.stack([logp[:end], old[:end], adv[:end], turn_mask]))
            turn_ids.append(episode)
        merged.append(torch.stack([logp, old, adv, mask]))
        merged_ids.append(episode)
    # a non-finite old log-prob inside a span (episode 0, turn 1: positions 2-4) must not split it
    merged[0][1, 3] = per_turn[0][1, 3] = float("nan")
    return _rows(_pad(merged), merged_ids), _rows(_pad(per_turn), turn_ids)


def _rows(x: torch.Tensor, episode_ids: list[int]) -> Rows:
    return Rows(x[0].clone().requires_grad_(True), x[1], x[2], x[3], torch.tensor(episode_ids))


@pytest.mark.parametrize(
    "mode, const",
    [("token_mean", None), ("seq_mean_token_sum", None), ("seq_mean_token_mean", None), ("seq_sum_const", 16.0)],
)
@pytest.mark.parametrize("name", sorted(available()))
def test_merged_rows_equal_per_turn_rows(name: str, mode: str, const: float | None) -> None:
    """Same per-token losses, episode-weighted aggregate and gradient w.r.t. logp (float64)."""
    merged, per_turn = _layouts()
    results = []
    for rows in (merged, per_turn):
        loss, _ = compute(name, rows.logp, rows.old_logp, rows.advantages, rows.mask, **PARAMS.get(name, {}))
        w = aggregation_weights(rows.mask, mode, units=rows.episode_ids, const=const)
        total = (w * loss).sum()
        (grad,) = torch.autograd.grad(total, rows.logp)
        action = rows.mask.bool()
        assert torch.all(grad[~action] == 0)
        results.append((loss[action], total, grad[action]))
    (loss_m, total_m, grad_m), (loss_p, total_p, grad_p) = results
    assert loss_m.numel() == sum(n for turns in EPISODES for _, n in turns)
    torch.testing.assert_close(loss_m, loss_p)
    torch.testing.assert_close(total_m, total_p)
    torch.testing.assert_close(grad_m, grad_p)
    assert (grad_m != 0).sum() > loss_m.numel() // 2  # not vacuous: most tokens carry gradient
