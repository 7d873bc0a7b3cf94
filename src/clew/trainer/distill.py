"""On-policy distillation: a teacher that shares the student's tokenizer scores every token the student sampled.

The per-token signal is the reverse KL's sample, d_t = log pi_student(a_t) - log pi_teacher(a_t), a_t drawn from
the student (Agarwal et al., "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes",
GKD, arXiv 2306.13649, section 3, with the reverse KL as the divergence; Thinking Machines Lab, "On-Policy
Distillation" (blog, 2025), whose per-token advantage is -d_t with discount 0). Two ways in (``distill.mode``):

- ``advantage``: A_t += -coef * d_t, on top of the configured credit, with the student's log-prob the rollout
  engine's (the sampling policy); the update's clipping and aggregation then apply to it like any advantage;
- ``loss``: coef * k(log pi_theta - log pi_teacher) per token beside the policy loss (k: ``distill.estimator``; k2's
  gradient d_t grad log pi is the reverse KL's on-policy gradient, k3 the low-variance KL estimator).

KEPO's quality gate ("KEPO: Knowledge-Enhanced Preference Optimization for Reinforcement Learning with Reasoning",
2026; only its abstract is in the seed list, so this reading is unconfirmed): dense teacher guidance only on
high-quality trajectories, here the episodes whose outcome reaches ``distill.gate``; the others get no distillation
term, since distilling under a flawed context injects misaligned gradients. KEPO's second part, hint-guided
rejection sampling, is not built.

The teacher scores at the rollout temperature, the student's sampling distribution softmax(z / T). A teacher with
another tokenizer is refused: distillation scores the student's own token ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clew.credit import Credit
from clew.policy import HFPolicy
from clew.store.run import checkpoints
from clew.table import TurnTable
from clew.trainer.states import token_logprobs


def load_teacher(name: str, student: HFPolicy) -> HFPolicy:
    """The teacher: a model name or directory, or a clew run directory (its last checkpoint's policy), refused unless
    its tokenizer maps every token exactly as the student's does."""
    path = Path(name)
    if path.is_dir() and (found := checkpoints(path)):
        path = found[-1] / "policy"
    teacher = HFPolicy.from_pretrained(path if path.exists() else name)
    check_same_tokenizer(teacher.tokenizer, student.tokenizer, name)
    return teacher


def check_same_tokenizer(teacher: Any, student: Any, name: str) -> None:
    """ValueError naming ``distill.teacher`` unless both tokenizers have the same vocabulary (token -> id)."""
    t_vocab, s_vocab = teacher.get_vocab(), student.get_vocab()
    if t_vocab == s_vocab:
        return
    differ = sum(1 for token, i in s_vocab.items() if t_vocab.get(token) != i) + len(set(t_vocab) - set(s_vocab))
    raise ValueError(
        f"distill.teacher={name} has another tokenizer than the student ({len(t_vocab)} tokens against "
        f"{len(s_vocab)}, {differ} mapped differently): on-policy distillation scores the student's own token ids, so "
        "the teacher must share its tokenizer (a checkpoint of the same model, or one trained on its tokenizer)"
    )


def gate_tokens(table: TurnTable, gate: float | None) -> np.ndarray:
    """(K,) bool: the action tokens of episodes whose outcome reaches ``gate`` (every token without a gate)."""
    per_turn = np.ones(len(table.turns), dtype=bool)
    if gate is not None:
        per_turn = np.array([table.episodes[e].outcome >= gate for e in table.episode], dtype=bool)
    return np.repeat(per_turn, np.diff(table.token_offsets))


def reverse_kl_advantage(student: np.ndarray, teacher: np.ndarray, gate: np.ndarray, coef: float) -> np.ndarray:
    """(K,) the distillation advantage -coef * (log pi_student - log pi_teacher) at the gated tokens, 0 elsewhere."""
    return np.where(gate, -coef * (student - teacher), 0.0)


def with_teacher_advantage(credit: Credit, table: TurnTable, term: np.ndarray) -> Credit:
    """``credit`` with ``term`` (K,) added to every action token's advantage (the turn advantage, spread over its
    tokens, where the estimator gave none per token)."""
    tokens = credit.token_advantage
    if tokens is None:
        tokens = np.repeat(credit.turn_advantage, np.diff(table.token_offsets))
    return dataclasses.replace(credit, token_advantage=tokens + term)


def teacher_logprobs(
    teacher: HFPolicy, turns: Sequence[tuple[Sequence[int], Sequence[int]]], rows_per_pass: int, dtype: str,
    temperature: float,
) -> np.ndarray:  # fmt: skip
    """(K,) the teacher's log-prob of every sampled action token, in table order."""
    return token_logprobs(teacher.model, turns, teacher.pad_id, rows_per_pass, dtype, temperature)


def diagnostics(student: np.ndarray, teacher: np.ndarray, table: TurnTable, gate: float | None) -> dict[str, float]:
    """The reverse KL's per-token estimate over all sampled tokens, and the share of episodes the gate lets through."""
    passed = [e.outcome >= gate for e in table.episodes] if gate is not None else [True] * len(table.episodes)
    return {
        "distill/reverse_kl": float(np.mean(student - teacher)) if student.size else 0.0,
        "distill/gated_episode_share": float(np.mean(passed)) if passed else 0.0,
    }
