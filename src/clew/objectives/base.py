"""The objective contract: ``compute(name, logp, old_logp, advantages, mask, ...)`` by name.

Shapes: ``B`` rows, ``T`` tokens; every tensor argument is (B, T). The result is the per-token
loss (minimised; zero where ``mask`` is 0) and a dict of detached, namespaced metrics.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from clew.objectives.regularizers import entropy_bonus, kl_penalty
from clew.objectives.surrogate import ctpo, gspo, holder, loop_clip, masked_mean, ppo_clip

Tensor = torch.Tensor
Surrogate = Callable[..., tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered policy surrogate and the aggregation its authors use."""

    name: str
    fn: Surrogate
    recommended_aggregation: str
    summary: str

    @property
    def params(self) -> dict[str, Any]:
        sig = inspect.signature(self.fn)
        return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


_REGISTRY = {
    spec.name: spec
    for spec in [
        ObjectiveSpec("ppo_clip", ppo_clip, "token_mean", "PPO clip with clip-higher and dual-clip"),
        ObjectiveSpec("loop_clip", loop_clip, "seq_mean_token_mean", "PPO with ratio window [1/(1+e), 1+e]"),
        ObjectiveSpec("gspo", gspo, "seq_mean_token_mean", "sequence-level length-normalised ratio"),
        ObjectiveSpec("ctpo", ctpo, "token_mean", "cumulative token ratio, position-adaptive log clip"),
        ObjectiveSpec("holder", holder, "seq_mean_token_mean", "power-mean sequence ratio (p -> 0 geometric)"),
    ]
}


def available() -> dict[str, ObjectiveSpec]:
    """Every objective by name with its parameters and recommended aggregation."""
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> ObjectiveSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_params(name: str, params: dict[str, Any]) -> None:
    valid = get(name).params
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"objective {name!r} has no parameter(s) {unknown}; valid: {sorted(valid)}")


def compute(
    name: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    is_weights: Tensor | None = None,
    **params: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loss = surrogate * is_weights + kl_coef * KL(pi || ref) - entropy_coef * H.

    ``is_weights`` (e.g. ``tis_weights``) is applied as a detached factor. KL in the loss needs
    ``ref_logp``; the entropy bonus needs per-token ``entropy``.
    """
    check_params(name, params)
    mask = mask.to(logp.dtype)
    loss, metrics = get(name).fn(logp, old_logp, advantages, mask, **params)
    if is_weights is not None:
        loss = loss * is_weights.detach()
        metrics["policy/is_weight_mean"] = masked_mean(is_weights.detach(), mask)
    if kl_coef:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs ref_logp (a frozen reference model)")
        kl = kl_penalty(logp, ref_logp, kl_estimator) * mask
        loss = loss + kl_coef * kl
        metrics["policy/kl_ref"] = masked_mean(kl.detach(), mask)
    if entropy_coef:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs per-token entropy")
        loss = loss + entropy_bonus(entropy, entropy_coef) * mask
        metrics["policy/entropy"] = masked_mean(entropy.detach(), mask)
    return loss, metrics
