"""What an estimator needs beyond the rollout, computed by the trainer before credit (``EstimatorSpec`` says which):
the KL reference's log-probs, the policy's hidden states, its belief in the gold answer, the value head's values,
a greedy rollout's return. Each is timed (``time/credit_<column>_s``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from clew import credit as credit_lib
from clew.rollout import PolicyActor, Task, collect, derive_seed
from clew.table import TurnTable
from clew.trainer.learner import Learner
from clew.trainer.session import Session
from clew.trainer.states import gold_logprobs, prompt_states
from clew.types import Episode

Column = Callable[[Session, TurnTable], dict[str, Any]]


def credit_input(session: Session, table: TurnTable) -> tuple[credit_lib.CreditInput, dict[str, float]]:
    """The table's ``CreditInput`` with every column the configured estimator needs, and their seconds."""
    inp = credit_lib.CreditInput.from_table(table)
    spec, params = credit_lib.get(session.cfg.credit.name), session.cfg.credit.params
    needed: dict[str, Column | None] = {
        "ref_logprob": reference_logprobs if spec.needs_reference(params) else None,
        "state_vector": state_vectors if spec.needs_state_vectors(params) else None,
        "gold_logprob": gold_beliefs if spec.needs_gold_beliefs else None,
        "value": token_values if spec.needs_values else None,
        "baseline": greedy_baseline if spec.needs_greedy_baseline else None,
    }
    seconds: dict[str, float] = {}
    for column, compute in needed.items():
        if compute is None:
            continue
        start = time.perf_counter()
        fields = compute(session, table)
        inp = dataclasses.replace(inp, **{k: v for k, v in fields.items() if not k.startswith("rollout/")})
        seconds.update({f"time/credit_{column}_s": time.perf_counter() - start})
        seconds.update({k: v for k, v in fields.items() if k.startswith("rollout/")})
    return inp, seconds


def reference_logprobs(session: Session, table: TurnTable) -> dict[str, Any]:
    """The KL reference's log-probs of every sampled token (REINFORCE++'s KL in the rewards)."""
    if not isinstance(session.learner, Learner):  # a cluster's learners: refused by the config
        return {}
    ref = session.learner.reference_logprobs([(t.prompt_ids, t.action_ids) for t in table.turns])
    return {"ref_logprob": np.asarray(ref, dtype=np.float64)}


def state_vectors(session: Session, table: TurnTable) -> dict[str, Any]:
    """The policy's hidden state at every turn's last prompt token (similarity anchor groups)."""
    train = session.cfg.train
    prompts = [t.prompt_ids for t in table.turns]
    vectors = prompt_states(session.policy.model, prompts, session.policy.pad_id, train.microbatch_rows, train.dtype)
    return {"state_vector": vectors}


def gold_beliefs(session: Session, table: TurnTable) -> dict[str, Any]:
    """(N,) each row's mean log-prob of its episode's gold reply after the row's prompt (NaN: no gold reply)."""
    tokenizer, train = session.policy.tokenizer, session.cfg.train
    encode = tokenizer.encode
    golds = [list(encode(e.gold_reply, add_special_tokens=False)) if e.gold_reply else [] for e in table.episodes]
    rows = [golds[e] for e in table.episode]
    prompts = [t.prompt_ids for t in table.turns]
    model, pad = session.policy.model, session.policy.pad_id
    return {"gold_logprob": gold_logprobs(model, prompts, rows, pad, train.microbatch_rows, train.dtype)}


def token_values(session: Session, table: TurnTable) -> dict[str, Any]:
    """The value head's V at every action token (GAE; the config ensures a critic and no cluster)."""
    assert isinstance(session.learner, Learner)
    values = session.learner.token_values([(t.prompt_ids, t.action_ids) for t in table.turns])
    return {"value": np.asarray(values, dtype=np.float64)}


def greedy_baseline(session: Session, table: TurnTable) -> dict[str, Any]:
    """ReMax's baseline: every group's task played once more at temperature 0 from the same env seed (not trained
    on); each row gets its group's greedy return. Its env steps are reported (``rollout/greedy_env_steps``)."""
    cfg, actor = session.cfg, session.actor
    assert actor is not None and session.link is not None  # an env run (the config refuses harness runs)
    seeds = {e.group_id: e.seed for e in table.episodes}
    tasks = [Task(cfg.env.id, seed, dict(cfg.env.kwargs)) for seed in seeds.values()]
    greedy = PolicyActor(session.link.engine, session.sampling(0.0))
    envs = session.env_hosts.make if session.env_hosts else None
    one = cfg.rollout.model_copy(update={"group_size": 1})
    groups = collect(greedy, tasks, one, derive_seed(cfg.seed, "greedy", min(seeds, default=0)), session.framing,
                     env_factory=envs)  # fmt: skip
    returns = {gid: episode_return(g.episodes[0]) for gid, g in zip(seeds, groups)}
    baseline = np.array([returns[int(g)] for g in table.group], dtype=np.float64)
    steps = sum(len(g.episodes[0].turns) for g in groups)
    return {"baseline": baseline, "rollout/greedy_env_steps": float(steps)}


def episode_return(episode: Episode) -> float:
    """The undiscounted return credit sees from turn 0: the step rewards, plus the outcome where the env reported it
    apart from them (``rewards_with_outcome``; otherwise the outcome is their sum and counts once)."""
    return sum(t.reward for t in episode.turns) + (episode.outcome if episode.outcome_explicit else 0.0)
