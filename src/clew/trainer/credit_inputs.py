"""What an estimator needs beyond the rollout, computed by the trainer before credit (``EstimatorSpec`` says which):
the KL reference's log-probs, the policy's hidden states, its belief in the gold answer, the value head's values,
a greedy rollout's return, the policy scored against counterfactual contexts (a masked observation, the verified
answer shown) and the group's outcome modes. Each is timed (``time/credit_<column>_s``)."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from clew import credit as credit_lib
from clew.credit.counterfactual import PLACEHOLDER_OBSERVATION
from clew.credit.modes import evidence_for, mode_targets, outcome_modes
from clew.rollout import PolicyActor, Task, collect, derive_seed
from clew.rollout.context import SUBGOAL
from clew.table import TurnTable
from clew.trainer.counterfactuals import masked_observation_prompt, privileged_hint, privileged_prompt
from clew.trainer.learner import Learner
from clew.trainer.preference import preference_pairs
from clew.trainer.session import Session
from clew.trainer.states import gold_logprobs, prompt_states, span_logprobs
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
        "counterfactual_gain": counterfactual_gains if spec.needs_counterfactual_gain else None,
        "privileged_logratio": privileged_logratios if spec.needs_privileged_logratio else None,
        "outcome_modes": mode_beliefs if spec.needs_outcome_modes else None,
        "prm_logratio": prm_logratios if spec.needs_implicit_prm else None,
        "branch_value": branch_values if spec.needs_branch_values else None,
        "segment_start": segment_starts if spec.needs_segments else None,
    }
    seconds: dict[str, float] = {}
    for column, compute in needed.items():
        if compute is None:
            continue
        start = time.perf_counter()
        fields = compute(session, table)
        inp = dataclasses.replace(inp, **{k: v for k, v in fields.items() if "/" not in k})
        seconds.update({f"time/credit_{column}_s": time.perf_counter() - start})
        seconds.update({k: v for k, v in fields.items() if "/" in k})  # metrics beside the columns
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


def _scorer(session: Session, reduce: str) -> Callable[[list[list[int]], list[list[int]]], np.ndarray]:
    """Score spans after prompts with the learner's current weights (``span_logprobs``, the run's microbatch)."""
    policy, train = session.policy, session.cfg.train

    def score(prompts: list[list[int]], spans: list[list[int]]) -> np.ndarray:
        return span_logprobs(policy.model, prompts, spans, policy.pad_id, train.microbatch_rows, train.dtype, reduce)

    return score


def _score_differences(
    session: Session, reduce: str, found: list[tuple[int, list[int], list[int], list[int]]], n_rows: int
) -> np.ndarray:
    """(n_rows,) for each (row, prompt a, prompt b, span) of ``found``: the span's log-prob after a minus after b
    (``reduce``: its token mean or sum); NaN for rows not in ``found``."""
    out = np.full(n_rows, np.nan)
    if found:
        rows, first, second, spans = (list(x) for x in zip(*found, strict=True))
        score = _scorer(session, reduce)
        out[rows] = score(first, spans) - score(second, spans)
    return out


def counterfactual_gains(session: Session, table: TurnTable) -> dict[str, Any]:
    """InfoPO's IG_t: the next action's mean log-prob after the observation that answered row t, minus after a
    placeholder observation; NaN for an episode's last row and where no masked prompt could be built."""
    found: list[tuple[int, list[int], list[int], list[int]]] = []  # (row, real prompt, masked prompt, next action)
    for episode_rows in table.episode_rows():
        for i, j in itertools.pairwise(episode_rows):
            turn, following = table.turns[i], table.turns[j]
            if not (turn.env_step and following.env_step):  # a context edit in between: the observation went to it
                continue
            prompt = masked_observation_prompt(turn, following, session.framing, PLACEHOLDER_OBSERVATION)
            if prompt is not None and following.action_ids:
                found.append((i, following.prompt_ids, prompt, following.action_ids))
    return {"counterfactual_gain": _score_differences(session, "mean", found, table.n_turns)}


def privileged_logratios(session: Session, table: TurnTable) -> dict[str, Any]:
    """PBSD's d_t: the summed log-prob of row t's action with its episode's gold reply shown in the opening message,
    minus without; NaN where the episode has no gold reply or the prompt is not the framing's own."""
    template = str(session.cfg.credit.params.get("hint", credit_lib.get("pbsd").params["hint"]))
    found: list[tuple[int, list[int], list[int], list[int]]] = []  # (row, teacher prompt, own prompt, action)
    for episode, episode_rows in zip(table.episodes, table.episode_rows(), strict=True):
        hint = privileged_hint(episode.gold_reply, template) if episode.gold_reply else None
        for t, i in enumerate(episode_rows):
            prompt = privileged_prompt(episode, t, session.framing, hint) if hint else None
            if prompt is not None and table.turns[i].action_ids:
                found.append((i, prompt, table.turns[i].prompt_ids, table.turns[i].action_ids))
    return {"privileged_logratio": _score_differences(session, "sum", found, table.n_turns)}


def mode_beliefs(session: Session, table: TurnTable) -> dict[str, Any]:
    """SIOP's columns: each episode's final answer clustered into its group's outcome modes, the modes' targets
    (``credit.params.eta``), and before every row the mean log-prob of its mode's reference reply (the mode's first
    member's sampled final action)."""
    episodes = table.episodes
    answers = [final_answer(e) for e in episodes]
    groups = np.array([e.group_id for e in episodes], dtype=np.int64)
    label, rep = outcome_modes(answers, groups)
    evidence = np.array([evidence_for(answers[r], [t.observation for t in e.turns[:-1]]) if r >= 0 else np.nan
                         for e, r in zip(episodes, rep, strict=True)])  # fmt: skip
    eta = float(session.cfg.credit.params.get("eta", credit_lib.get("siop").params["eta"]))
    weight = mode_targets(label, groups, evidence, eta)[table.episode]
    refs = [episodes[r].turns[-1].action_ids if r >= 0 else [] for r in rep]
    spans = [list(refs[e]) for e in table.episode]
    belief = _scorer(session, "mean")([t.prompt_ids for t in table.turns], spans)
    return {"mode_weight": weight, "mode_logprob": belief}


def final_answer(episode: Episode) -> str | None:
    """An episode's final answer when the env ended it: the answer the env parsed from the last action
    (``info["answer"]``, the convention maj@k reads), else that action's text; None when it was cut short, failed,
    or never acted."""
    if not episode.turns or not episode.terminated or episode.error is not None:
        return None
    parsed = episode.turns[-1].info.get("answer")
    return str(parsed) if parsed is not None else episode.turns[-1].action_text


def prm_logratios(session: Session, table: TurnTable) -> dict[str, Any]:
    """OPRL: the old policy scores every action; the implicit PRM takes one trajectory-DPO step on the group's
    (better, worse) episode pairs against it; the updated PRM's summed log-prob of each action minus the old's."""
    prm, policy, train = session.prm, session.policy, session.cfg.train
    assert prm is not None  # the session builds it for estimators that need it
    rows = [(t.prompt_ids, t.action_ids) for t in table.turns]
    old = span_logprobs(policy.model, [r[0] for r in rows], [r[1] for r in rows], policy.pad_id,
                        train.microbatch_rows, train.dtype, "sum")  # fmt: skip
    acted = {int(e) for e in table.episode}  # an episode without rows has no log-prob to prefer
    pairs = [p for p in preference_pairs([e.outcome for e in table.episodes], [e.group_id for e in table.episodes])
             if p[0] in acted and p[1] in acted]  # fmt: skip
    beta = float(session.cfg.credit.params.get("beta", credit_lib.get("oprl").params["beta"]))
    loss = prm.dpo_step(rows, table.episode, np.nan_to_num(old), pairs, beta, len(table.episodes))
    return {"prm_logratio": prm.score(rows) - old, "prm/dpo_loss": loss, "prm/pairs": float(len(pairs))}


def branch_values(session: Session, table: TurnTable) -> dict[str, Any]:
    """SPO's Monte-Carlo values: ``credit.params.rollouts`` continuations, at the rollout's temperature, from the
    state before every ``cutpoint_interval``-th turn of each episode (the env replays the episode's actions up to
    there, ``Task.prefix``); each cut row gets their mean return. A branch point shared by episodes (same seed,
    same actions) is played once. The continuations are not trained on; their env steps are reported
    (``rollout/branch_env_steps``, replayed steps not counted)."""
    cfg, actor = session.cfg, session.actor
    assert actor is not None and session.link is not None  # an env run (the config refuses harness runs)
    defaults, params = credit_lib.get(cfg.credit.name).params, cfg.credit.params
    interval, rollouts = (int(params.get(k, defaults[k])) for k in ("cutpoint_interval", "rollouts"))
    cuts: dict[tuple[int, tuple[str, ...]], tuple[Task, list[int]]] = {}
    for episode, rows in zip(table.episodes, table.episode_rows(), strict=True):
        for t in range(interval, len(episode.turns), interval):
            prefix = tuple(episode.turns[:t])
            key = (episode.seed, tuple(turn.action_text for turn in prefix))
            task = Task(cfg.env.id, episode.seed, dict(cfg.env.kwargs), prefix)
            cuts.setdefault(key, (task, []))[1].append(rows[t])
    value = np.full(table.n_turns, np.nan)
    if not cuts:
        return {"branch_value": value, "rollout/branch_env_steps": 0.0}
    branch = PolicyActor(session.link.engine, session.sampling(cfg.rollout.temperature))
    envs = session.env_hosts.make if session.env_hosts else None
    many = cfg.rollout.model_copy(update={"group_size": rollouts})
    seed = derive_seed(cfg.seed, "branch", min(e.seed for e in table.episodes))
    groups = collect(branch, [task for task, _ in cuts.values()], many, seed, session.framing, env_factory=envs)
    steps = 0
    for (task, cut_rows), group in zip(cuts.values(), groups, strict=True):
        played = [e for e in group.episodes if e.failure != "infra"]  # a diverged replay is no sample
        steps += sum(len(e.turns) - len(task.prefix) for e in played)
        if played:
            value[cut_rows] = float(np.mean([episode_return(e) for e in played]))
    return {"branch_value": value, "rollout/branch_env_steps": float(steps)}


def segment_starts(session: Session, table: TurnTable) -> dict[str, Any]:
    """HiPER's segments: a row opens one when its reply sets a subgoal (``<subgoal>...</subgoal>``, the ``plan``
    context), and every episode's first row does."""
    starts = np.array([bool(SUBGOAL.search(t.action_text)) for t in table.turns], dtype=bool) | (table.turn == 0)
    return {"segment_start": starts}
