"""Evaluation of frozen policies: rollouts on held-out seeds and interval statistics."""

from clew.eval.diagnose import diagnose, ending_shares
from clew.eval.evaluate import EVAL_SEED_BASE, EvalResult, eval_tasks, evaluate, summarize
from clew.eval.stats import (
    bootstrap_interval,
    censor_at_budget,
    iqm,
    steps_to_threshold,
    stratified_bootstrap,
    stratified_difference,
    wilson_interval,
)

__all__ = [
    "EVAL_SEED_BASE",
    "EvalResult",
    "bootstrap_interval",
    "censor_at_budget",
    "diagnose",
    "ending_shares",
    "eval_tasks",
    "evaluate",
    "iqm",
    "steps_to_threshold",
    "stratified_bootstrap",
    "stratified_difference",
    "summarize",
    "wilson_interval",
]
