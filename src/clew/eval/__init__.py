"""Evaluation of frozen policies: rollouts on held-out seeds and interval statistics."""

from clew.eval.diagnose import diagnose, ending_shares
from clew.eval.evaluate import EVAL_SEED_BASE, EvalResult, eval_tasks, evaluate, summarize
from clew.eval.stats import bootstrap_interval, iqm, wilson_interval

__all__ = [
    "EVAL_SEED_BASE",
    "EvalResult",
    "bootstrap_interval",
    "diagnose",
    "ending_shares",
    "eval_tasks",
    "evaluate",
    "iqm",
    "summarize",
    "wilson_interval",
]
