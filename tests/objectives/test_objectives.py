"""Worked examples from shared/reference/objectives.md, gradchecks and equivalences."""

import math

import pytest
import torch

from clew.objectives import (
    aggregate,
    available,
    compute,
    entropy_bonus,
    kl_penalty,
    power_mean_ratio,
    tis_weights,
)

D = torch.float64


def t(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=D)


def one_token(ratios: list[float], advs: list[float]) -> tuple[torch.Tensor, ...]:
    """Rows of one token each with the given ratios (old log-prob 0)."""
    logp = t([[math.log(r)] for r in ratios]).requires_grad_(True)
    return logp, torch.zeros_like(logp), t([[a] for a in advs]), torch.ones_like(logp)


def test_ppo_clip_higher_and_dual_clip_table() -> None:
    # (A, r): (+1, 1.5) -> -1.28 clipped; (+1, 0.7) -> -0.7; (-1, 0.5) -> 0.8 clipped;
    # (-1, 2.0) -> 2.0; (-1, 4.0) -> min(4.0, 3) = 3.0 dual-clipped
    logp, old, adv, mask = one_token([1.5, 0.7, 0.5, 2.0, 4.0], [1, 1, -1, -1, -1])
    loss, metrics = compute("ppo_clip", logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    torch.testing.assert_close(loss[:, 0], t([-1.28, -0.7, 0.8, 2.0, 3.0]))
    loss.sum().backward()
    assert logp.grad is not None
    has_grad = (logp.grad[:, 0].abs() > 0).tolist()
    assert has_grad == [False, True, False, True, False]
    assert metrics["policy/clipfrac"].item() == pytest.approx(2 / 5)
    assert metrics["policy/dual_clipfrac"].item() == pytest.approx(1 / 5)
    assert metrics["policy/ratio_max"].item() == pytest.approx(4.0)


def test_ppo_clip_range_per_token() -> None:
    """clip_scale 0.5 halves a token's range (A=+1, r=1.5: clipped at 1.1), 2 doubles it (r=1.3 not clipped)."""
    logp, old, adv, mask = one_token([1.5, 1.3, 1.3], [1, 1, 1])
    scale = t([[0.5], [2.0], [1.0]])
    loss, _ = compute("ppo_clip", logp, old, adv, mask, clip_low=0.2, clip_scale=scale)
    torch.testing.assert_close(loss[:, 0], t([-1.1, -1.3, -1.2]))
    with pytest.raises(ValueError, match="objective 'gspo' has no per-token clip range"):
        compute("gspo", logp, old, adv, mask, clip_scale=scale)


def test_loop_clip_window() -> None:
    # eps 0.1: window [0.90909, 1.1]; A = 0.6, r = 1.2 -> objective min(0.72, 0.66) = 0.66
    logp, old, adv, mask = one_token([1.2, 0.8], [0.6, -0.6])
    loss, _ = compute("loop_clip", logp, old, adv, mask, epsilon=0.1)
    # second: A < 0, r = 0.8 < 1/1.1 -> clipped at -(-0.6) * 0.90909 = 0.54545
    torch.testing.assert_close(loss[:, 0], t([-0.66, 0.6 / 1.1]))


def test_gspo_sequence_ratio_and_all_or_nothing_clip() -> None:
    # log r = [0.1, -0.2, 0.4] -> mean 0.1 -> s = 1.10517 > 1.0004 -> whole sequence clipped
    logp = t([[0.1, -0.2, 0.4], [2e-4, -1e-4, 5e-4]]).requires_grad_(True)
    loss, metrics = compute("gspo", logp, torch.zeros_like(logp), torch.ones_like(logp), torch.ones_like(logp))
    torch.testing.assert_close(loss[0], t([-1.0004] * 3))
    loss.sum().backward()
    assert logp.grad is not None
    assert logp.grad[0].abs().sum() == 0 and (logp.grad[1].abs() > 0).all()
    # gradient of token t = -s * A: s = exp(mean(2e-4, -1e-4, 5e-4)) = exp(2e-4)
    torch.testing.assert_close(logp.grad[1], t([-math.exp(2e-4)] * 3))
    assert metrics["policy/clipfrac"].item() == pytest.approx(0.5)


def test_ctpo_position_adaptive_clip() -> None:
    # A > 0, log r = [0.06, -0.01, 0.03, 0.0], p = 0.5; t=1: S=0.06 > 0.05 -> clipped (no gradient)
    logp = t([[0.06, -0.01, 0.03, 0.0]]).requires_grad_(True)
    loss, _ = compute("ctpo", logp, torch.zeros_like(logp), torch.ones_like(logp), torch.ones_like(logp))
    torch.testing.assert_close(-loss[0], t([1.05127, 1.05127, 1.08329, 1.08329]), atol=1e-5, rtol=0)
    loss.sum().backward()
    assert logp.grad is not None
    assert (logp.grad[0].abs() > 0).tolist() == [False, True, True, True]


def test_ctpo_gradient_flows_only_through_the_current_token() -> None:
    """d loss_t / d logp_j = 0 for j != t (the prefix ratio is detached); = -A rho_t for j = t."""
    logp = t([[0.01, -0.02, 0.015]]).requires_grad_(True)
    adv = t([[1.0, 1.0, 1.0]])
    loss, _ = compute("ctpo", logp, torch.zeros_like(logp), adv, torch.ones_like(logp))
    jac = torch.stack([torch.autograd.grad(loss[0, k], logp, retain_graph=True)[0][0] for k in range(3)])
    prefix = logp.detach()[0].cumsum(0).exp()
    torch.testing.assert_close(jac, torch.diag(-prefix))


@pytest.mark.parametrize(
    "p, rho, grads",
    [
        (2.0, 1.040833, [0.38431, 0.28823, 0.32026]),
        (1.0, 1.033333, [0.33333, 0.33333, 0.33333]),
        (0.0, 1.025986, [0.28500, 0.37999, 0.34200]),
        (-1.0, 1.018868, [0.24030, 0.42720, 0.34603]),
        (-2.0, 1.012045, [0.19996, 0.47397, 0.34552]),
    ],
)
def test_holder_power_mean_and_token_weights(p: float, rho: float, grads: list[float]) -> None:
    # ratios [1.2, 0.9, 1.0]; d rho / d r_t = (1/|o|) r_t^(p-1) rho^(1-p)
    ratios = t([[1.2, 0.9, 1.0]]).requires_grad_(True)
    value = power_mean_ratio(ratios.log(), torch.ones_like(ratios), p)
    assert value.item() == pytest.approx(rho, abs=1e-6)
    value.sum().backward()
    assert ratios.grad is not None
    torch.testing.assert_close(ratios.grad[0], t(grads), atol=1e-5, rtol=0)


def test_holder_p1_is_arithmetic_mean_in_the_loss() -> None:
    logp = t([[math.log(1.05), math.log(0.98), math.log(1.01)]])
    loss, metrics = compute("holder", logp, torch.zeros_like(logp), torch.ones_like(logp), torch.ones_like(logp), p=1.0)
    mean_ratio = (1.05 + 0.98 + 1.01) / 3
    assert metrics["policy/seq_ratio_mean"].item() == pytest.approx(mean_ratio)
    torch.testing.assert_close(loss[0], t([-mean_ratio] * 3))


def test_gspo_on_one_token_sequences_equals_ppo_clip() -> None:
    torch.manual_seed(0)
    logp = (0.3 * torch.randn(6, 1, dtype=D)).requires_grad_(True)
    old, adv, mask = torch.zeros_like(logp), torch.randn(6, 1, dtype=D), torch.ones_like(logp)
    g_loss, _ = compute("gspo", logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    p_loss, _ = compute("ppo_clip", logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(g_loss, p_loss)
    (g_grad,) = torch.autograd.grad(g_loss.sum(), logp)
    (p_grad,) = torch.autograd.grad(p_loss.sum(), logp)
    torch.testing.assert_close(g_grad, p_grad)


@pytest.mark.parametrize("name", sorted(available()))
def test_gradcheck_float64(name: str) -> None:
    torch.manual_seed(1)
    logp = (0.05 * torch.randn(3, 4, dtype=D)).requires_grad_(True)
    old = 0.05 * torch.randn(3, 4, dtype=D)
    adv = torch.randn(3, 1, dtype=D).expand(3, 4)  # sequence-level advantages, as GRPO gives
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    params = {"clip_low": 0.5, "clip_high": 0.5} if name == "gspo" else {}
    if name == "ctpo":  # its forward value uses a stop-gradient prefix: check on one-token rows
        logp, old, adv, mask = (x.reshape(12, 1) for x in (logp.detach(), old, adv, mask))
        logp.requires_grad_(True)

    def fn(x: torch.Tensor) -> torch.Tensor:
        loss, _ = compute(name, x, old, adv, mask, **params)
        return aggregate(loss, mask, "token_mean")

    assert torch.autograd.gradcheck(fn, (logp,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", sorted(available()))
def test_empty_mask_gives_zero_loss_and_gradient(name: str) -> None:
    logp = torch.randn(2, 3, dtype=D).requires_grad_(True)
    mask = torch.zeros(2, 3, dtype=D)
    loss, metrics = compute(name, logp, torch.zeros_like(logp), torch.ones_like(logp), mask)
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const"):
        total = aggregate(loss, mask, mode)
        assert total.item() == 0.0
        (grad,) = torch.autograd.grad(total, logp, retain_graph=True)
        assert torch.all(grad == 0)
    assert all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", sorted(available()))
def test_nonfinite_inputs_are_reported_not_propagated(name: str) -> None:
    logp = t([[0.0, float("nan"), 0.1], [float("inf"), 0.2, -50.0]]).requires_grad_(True)
    mask = torch.ones(2, 3, dtype=D)
    loss, metrics = compute(name, logp, torch.zeros_like(logp), torch.ones_like(logp), mask)
    total = aggregate(loss, mask, "token_mean")
    assert torch.isfinite(total)
    assert metrics["policy/nonfinite_tokens"].item() == 2
    assert metrics["policy/log_ratio_clamped"].item() == 1  # -50 clamped to -20


def test_unknown_objective_and_parameter() -> None:
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="available"):
        compute("trpo", x, x, x, x)
    with pytest.raises(ValueError, match="valid"):
        compute("ppo_clip", x, x, x, x, clip=0.3)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        compute("ppo_clip", x, x, x, x, dual_clip=0.5)


def test_kl_estimators() -> None:
    # delta = -1.0 - (-1.5) = 0.5: k1 0.5, k2 0.125, k3 exp(-0.5) + 0.5 - 1 = 0.10653
    logp, ref = t([[-1.0]]), t([[-1.5]])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.10653, abs=1e-5)


def test_kl_and_entropy_in_the_loss() -> None:
    logp, old, adv, mask = t([[-1.0]]), t([[-1.0]]), t([[0.0]]), t([[1.0]])
    loss, metrics = compute("ppo_clip", logp, old, adv, mask, ref_logp=t([[-1.5]]), kl_coef=0.001)
    assert loss.item() == pytest.approx(0.001 * 0.10653, abs=1e-8)
    assert metrics["policy/kl_ref"].item() == pytest.approx(0.10653, abs=1e-5)
    # entropies [2.0, 0.5], coef 0.001, token-mean -> -0.00125
    bonus = entropy_bonus(t([[2.0, 0.5]]), 0.001)
    assert aggregate(bonus, t([[1, 1]]), "token_mean").item() == pytest.approx(-0.00125)
    with pytest.raises(ValueError, match="ref_logp"):
        compute("ppo_clip", logp, old, adv, mask, kl_coef=0.1)


def test_tis_weights() -> None:
    # pi_train 0.3 / pi_vllm 0.1 = 3 -> capped at 2; 0.05 / 0.1 = 0.5
    old = t([[math.log(0.3), math.log(0.05)]])
    behavior = t([[math.log(0.1), math.log(0.1)]])
    weights = tis_weights(old, behavior, torch.ones_like(old), cap=2.0)
    torch.testing.assert_close(weights, t([[2.0, 0.5]]))
    # a PPO token loss of -0.8 becomes -1.6 and -0.4
    logp = old.clone()
    loss, _ = compute("ppo_clip", logp, old, t([[0.8, 0.8]]), torch.ones_like(old), is_weights=weights)
    torch.testing.assert_close(loss, t([[-1.6, -0.4]]))
    assert not tis_weights(old, behavior, torch.ones_like(old), level="sequence").requires_grad


def test_value_loss_by_hand() -> None:
    """0.5 max((V - R)^2, (V_old + clip(V - V_old, -0.2, 0.2) - R)^2), per token."""
    from clew.objectives import value_loss

    values, old, returns = (
        torch.tensor([[1.0, 0.55, 0.9]]),
        torch.tensor([[0.5, 0.5, 0.5]]),
        torch.tensor([[0.6, 1.0, 1.0]]),
    )
    # token 0: unclipped 0.16, clipped (0.7 - 0.6)^2 = 0.01; token 1: inside the clip, 0.2025 both;
    # token 2: unclipped 0.01, clipped (0.7 - 1.0)^2 = 0.09 (the pessimistic max keeps the clipped one)
    assert value_loss(values, old, returns, 0.2) == pytest.approx(torch.tensor([[0.08, 0.10125, 0.045]]))
    assert value_loss(values, old, returns, None) == pytest.approx(torch.tensor([[0.08, 0.10125, 0.005]]))
