"""Reward sources beyond the env's verifier: LLM judges (pointwise, group ranking, per-step process scores) on any
clew engine or an OpenAI-compatible endpoint, judged as a service beside the rollout, composed by config.

Torch-free: a local judge is handed its engine by the trainer (``clew.trainer.judging``), which also wires the
sources into the loop. The pieces: ``prompts`` (what a judge reads, fenced, defanged and truncated), ``parse``
(bounded scores), ``backends`` (engines and endpoints), ``service`` (pool, cache, deadlines, retry) and ``sources``
(how scores become outcomes and step rewards).
"""

from clew.rewards.backends import EngineJudge, JudgeBackend, OpenAIJudge
from clew.rewards.parse import parse_ranking, parse_score
from clew.rewards.service import JudgeService, Verdict
from clew.rewards.sources import SOURCE_NAMES, JudgeParams, Scores, Source, VerifierParams, apply, parse_params

__all__ = [
    "SOURCE_NAMES",
    "EngineJudge",
    "JudgeBackend",
    "JudgeParams",
    "JudgeService",
    "OpenAIJudge",
    "Scores",
    "Source",
    "Verdict",
    "VerifierParams",
    "apply",
    "parse_params",
    "parse_ranking",
    "parse_score",
]
