"""Evaluation of frozen policies: rollouts on held-out seeds and interval statistics."""

from clew.eval.diagnose import diagnose, ending_shares
from clew.eval.evaluate import EVAL_SEED_BASE, AtK, EvalResult, at_k, eval_tasks, evaluate, summarize
from clew.eval.sampling import NotComparable, maj_at_k, mean_at_k, pass_at_k
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
    "AtK",
    "EvalResult",
    "NotComparable",
    "at_k",
    "bootstrap_interval",
    "censor_at_budget",
    "diagnose",
    "ending_shares",
    "eval_tasks",
    "evaluate",
    "iqm",
    "maj_at_k",
    "mean_at_k",
    "pass_at_k",
    "steps_to_threshold",
    "stratified_bootstrap",
    "stratified_difference",
    "summarize",
    "wilson_interval",
]
