"""A learner-side guard: a held-back probe batch; an optimizer step that moves it too far is rolled back.

Why: on the tiny model, 6 of 75 grid runs collapsed in a single AdamW step (the end-of-turn token's
mean log-prob fell from -0.03 to -1.04 with a gradient norm below the clip and approx-KL < 2e-4 on
the step before). Gradient clipping and PPO's ratio clip do not see such a step coming: the
ratio clip acts on the training tokens' ratios *before* the step. The guard measures the step
*after* it is taken, on rows the update never trained on; the learner then halves the step's
learning rate while the probe moved too far (``train/backtracks``) and, after ``guard_backtracks``
halvings, restores parameters and optimizer state from the snapshot (``train/rejected_steps``).
The probe's KL is logged as ``train/probe_kl``. The guard is a net for large one-step jumps; the
measured cause of the collapses was token-mean aggregation (``benchmarks/README.md``, Stability).

The measure is the k3 estimate of KL(pi_before || pi_after) on the probe rows' sampled tokens,
mean over tokens (Schulman, "Approximating KL Divergence", 2020): with d = log pi_after - log pi_before,
k3 = exp(d) - 1 - d >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from clew.policy.lora import trainable
from clew.policy.scoring import action_logprobs, eval_mode
from clew.tensors import TokenRow, pack_batch


def hold_back(rows: Sequence[TokenRow], n_probe: int, seed: int) -> tuple[list[TokenRow], list[TokenRow]]:
    """(training rows, probe rows): a seeded sample of ``min(n_probe, len(rows) // 4)`` rows is held back."""
    n = min(n_probe, len(rows) // 4)
    if n <= 0:
        return list(rows), []
    picked = set(torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:n].tolist())
    return [r for i, r in enumerate(rows) if i not in picked], [rows[i] for i in sorted(picked)]


def probe_kl(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean k3 KL(before || after) over the masked (sampled) tokens; (B, T) log-probs and mask."""
    d = (after - before) * mask
    k3 = (d.exp() - 1 - d) * mask
    return float(k3.sum() / mask.sum().clamp(min=1))


class StepGuard:
    """Scores a fixed set of probe rows, snapshots before each step, and rolls a step back when the probe moved
    too far.

    The learner keeps one guard for the whole run: its probe rows are held back from the first update only,
    and the probe's scores after an accepted step are the next step's "before", so each step costs one
    forward pass over the probe (action positions only) and one copy of the trained parameters into a buffer
    allocated once (a few MB with LoRA). A rejected step restores the parameters exactly and undoes AdamW's
    moment updates by inverting them with the step's own (clipped) gradients, ``undo_adamw_moments``: exact
    up to float rounding, without a second and third copy of the model per step."""

    def __init__(
        self, model: Any, probe: Sequence[TokenRow], pad_id: int, max_kl: float, temperature: float,
        extra: Sequence[torch.nn.Parameter] = (),
    ) -> None:  # fmt: skip
        """``extra``: trained parameters outside ``model`` (a value head), rolled back with it."""
        self.model, self.max_kl, self.temperature = model, max_kl, temperature
        self.extra = list(extra)
        self.rows = list(probe)
        self.batch = pack_batch(self.rows, pad_id)
        self.reference = self._score()
        self._params: list[torch.Tensor] | None = None
        self._fresh: list[bool] = []  # per parameter: no optimizer state before this step

    @torch.no_grad()
    def _score(self) -> torch.Tensor:
        rows = self.batch.rows
        with eval_mode(self.model):  # per module: the loss forward keeps dropout off
            logp, _ = action_logprobs(
                self.model, rows.input_ids, rows.attention_mask, rows.action_mask, self.temperature
            )
        return logp

    @torch.no_grad()
    def snapshot(self, optimizer: torch.optim.Optimizer) -> None:
        """Copy the trained parameters (call right before ``optimizer.step()``)."""
        params = self._trained()
        if self._params is None:
            self._params = [p.detach().clone() for p in params]
        else:
            torch._foreach_copy_(self._params, [p.detach() for p in params])
        self._fresh = [not optimizer.state.get(p) for p in params]

    def _trained(self) -> list[torch.nn.Parameter]:
        return [*trainable(self.model), *self.extra]

    @torch.no_grad()
    def check(self, optimizer: torch.optim.Optimizer) -> tuple[bool, float]:
        """(accepted, probe KL) for the step just taken; a rejected step is undone in place."""
        after = self._score()
        kl = probe_kl(self.reference, after, self.batch.rows.action_mask)
        if kl <= self.max_kl:
            self.reference = after
            return True, kl
        assert self._params is not None, "snapshot() must precede check()"
        betas = optimizer.param_groups[0]["betas"]
        for p, saved, fresh in zip(self._trained(), self._params, self._fresh):
            p.copy_(saved)
            if fresh:
                optimizer.state.pop(p, None)  # the step was the parameter's first: AdamW starts it afresh
            elif p.grad is not None:
                undo_adamw_moments(optimizer.state[p], p.grad, betas)
        return False, kl


def undo_adamw_moments(state: dict[str, Any], grad: torch.Tensor, betas: tuple[float, float]) -> None:
    """Invert one AdamW step's moment updates in place (Loshchilov & Hutter, arXiv 1711.05101, Algorithm 2:
    m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2, t' = t + 1), given the gradient ``g`` that step used."""
    b1, b2 = betas
    state["exp_avg"].sub_(grad, alpha=1 - b1).div_(b1)
    state["exp_avg_sq"].addcmul_(grad, grad, value=-(1 - b2)).div_(b2).clamp_(min=0)
    if isinstance(state["step"], torch.Tensor):
        state["step"].sub_(1)
    else:
        state["step"] -= 1
