"""Credit assignment: advantage estimators behind one contract (torch-free, vectorised numpy).

``compute(name, CreditInput, **params) -> Credit``; ``available()`` lists names with metadata.
"""

from clew.credit import belief, counterfactual, critic, hierarchy, modes, outcome, prm, segments, stepwise, tokens  # noqa: F401  (registers the estimators)
from clew.credit.base import Credit, CreditInput, EstimatorSpec, available, check_params, compute, get, register

__all__ = ["Credit", "CreditInput", "EstimatorSpec", "available", "check_params", "compute", "get", "register"]
