"""Policy objectives (pure torch): surrogates by name, loss aggregation, regularisers."""

from clew.objectives.aggregate import MODES, aggregate, aggregation_weights
from clew.objectives.base import ObjectiveSpec, available, check_params, compute, get, register
from clew.objectives.regularizers import entropy_bonus, kl_penalty, teacher_kl, tis_weights, value_loss
from clew.objectives.surrogate import power_mean_ratio, span_ids

__all__ = [
    "MODES",
    "ObjectiveSpec",
    "aggregate",
    "aggregation_weights",
    "available",
    "check_params",
    "compute",
    "entropy_bonus",
    "get",
    "kl_penalty",
    "power_mean_ratio",
    "register",
    "span_ids",
    "teacher_kl",
    "tis_weights",
    "value_loss",
]
