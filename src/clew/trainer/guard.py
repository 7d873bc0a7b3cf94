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

import copy
from collections.abc import Sequence
from typing import Any

import torch

from clew.policy.hf import token_logprobs
from clew.policy.lora import trainable
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
    """Scores the probe rows, snapshots before each step, and rolls a step back when the probe moved too far."""

    def __init__(self, model: Any, probe: Sequence[TokenRow], pad_id: int, max_kl: float, temperature: float) -> None:
        self.model, self.max_kl, self.temperature = model, max_kl, temperature
        self.batch = pack_batch(list(probe), pad_id)
        self.reference = self._score()
        self._saved: tuple[list[torch.Tensor], dict[str, Any]] | None = None

    @torch.no_grad()
    def _score(self) -> torch.Tensor:
        rows = self.batch.rows
        modes = [m.training for m in self.model.modules()]  # per module: the loss forward keeps dropout off
        self.model.eval()
        logp, _ = token_logprobs(self.model, rows.input_ids, rows.attention_mask, self.temperature)
        for module, mode in zip(self.model.modules(), modes):
            module.training = mode
        return logp

    def snapshot(self, optimizer: torch.optim.Optimizer) -> None:
        """Copy the trained parameters and the optimizer state (call right before ``optimizer.step()``)."""
        params = [p.detach().clone() for p in trainable(self.model)]
        self._saved = (params, copy.deepcopy(optimizer.state_dict()))

    def check(self, optimizer: torch.optim.Optimizer) -> tuple[bool, float]:
        """(accepted, probe KL) for the step just taken; a rejected step is undone in place."""
        after = self._score()
        kl = probe_kl(self.reference, after, self.batch.rows.action_mask)
        if kl <= self.max_kl:
            self.reference = after
            return True, kl
        assert self._saved is not None, "snapshot() must precede check()"
        params, state = self._saved
        with torch.no_grad():
            for p, saved in zip(trainable(self.model), params):
                p.copy_(saved)
        optimizer.load_state_dict(state)
        return False, kl
