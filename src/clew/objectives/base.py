"""The objective contract: ``compute(name, logp, old_logp, advantages, mask, ...)`` by name.

Shapes: ``B`` rows, ``T`` tokens; every tensor argument is (B, T). The result is the per-token
loss (minimised; zero where ``mask`` is 0) and a dict of detached, namespaced metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from clew.objectives.regularizers import entropy_bonus, kl_penalty
from clew.objectives.surrogate import ctpo, gspo, holder, loop_clip, masked_mean, ppo_clip
from clew.registry import ParamRegistry, keyword_params

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
        return keyword_params(self.fn)


OBJECTIVES: ParamRegistry[ObjectiveSpec] = ParamRegistry("objective")


def register(name: str, fn: Surrogate, recommended_aggregation: str, summary: str = "") -> None:
    """Add (or replace) a surrogate: ``fn(logp, old_logp, advantages, mask, **params)`` -> (per-token loss, metrics),
    all (B, T); its keyword-only parameters are ``objective.params``. A plug-in module calls this at import."""
    OBJECTIVES.add(ObjectiveSpec(name, fn, recommended_aggregation, summary))


register("ppo_clip", ppo_clip, "token_mean", "PPO clip with clip-higher and dual-clip")
register("loop_clip", loop_clip, "seq_mean_token_mean", "PPO with ratio window [1/(1+e), 1+e]")
register("gspo", gspo, "seq_mean_token_mean", "sequence-level length-normalised ratio")
register("ctpo", ctpo, "token_mean", "cumulative token ratio, position-adaptive log clip")
register("holder", holder, "seq_mean_token_mean", "power-mean sequence ratio (p -> 0 geometric)")


def available() -> dict[str, ObjectiveSpec]:
    """Every objective by name with its parameters and recommended aggregation."""
    return OBJECTIVES.available()


def get(name: str) -> ObjectiveSpec:
    return OBJECTIVES.get(name)


def check_params(name: str, params: dict[str, Any]) -> None:
    """Fail on parameters the objective does not take, listing the valid ones."""
    OBJECTIVES.check_params(name, params)


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
    clip_scale: Tensor | None = None,
    **params: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loss = surrogate * is_weights + kl_coef * KL(pi || ref) - entropy_coef * H.

    ``is_weights`` (e.g. ``tis_weights``) is applied as a detached factor. KL in the loss needs
    ``ref_logp``; the entropy bonus needs per-token ``entropy``. ``clip_scale`` (B, T) scales each token's clip
    range (an estimator's adaptive clipping), for surrogates with a per-token clip range (``ppo_clip``).
    """
    check_params(name, params)
    spec = get(name)
    if clip_scale is not None:
        if "clip_scale" not in spec.params:
            raise ValueError(f"objective {name!r} has no per-token clip range to scale; use ppo_clip")
        params = {**params, "clip_scale": clip_scale.detach()}
    mask = mask.to(logp.dtype)
    loss, metrics = spec.fn(logp, old_logp, advantages, mask, **params)
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
