"""The loop's stages on a ``Session``: rollout (with dynamic-sampling refill and one engine retry), credit, the
selection of rows (filters, down-sampling) and the update (overlapped with the next rollout when
``rollout.max_staleness >= 1``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from clew import credit as credit_lib
from clew.envs import Env
from clew.envs.pool import EnvWorkerError
from clew.policy import EngineError
from clew.rollout import Task, collect, derive_seed
from clew.store.run import read_jsonl
from clew.table import TurnTable
from clew.tensors import TokenRow
from clew.trainer import branching, curriculum, downsample, replay
from clew.trainer import distill as distillation
from clew.trainer import preference as prefer
from clew.trainer.credit_inputs import credit_input
from clew.trainer.distributed import LearnerGroup
from clew.trainer.learner import Learner
from clew.trainer.select import cap_rows, drop_env_errors, drop_zero_variance, shape
from clew.trainer.session import Session, connect
from clew.trainer.states import span_logprobs, token_entropies
from clew.types import Episode, Group

Rollout = tuple[list[Group], list[Group]]  # (groups to train on, every group collected)


def rollout(session: Session, it: int, keep: bool = True) -> Rollout:
    """(groups to train on, every group collected); dynamic sampling refills dropped groups. ``keep``: each
    episode is kept as it ends (``clew.trainer.partial``), and one kept before a kill is not played again."""
    cfg = session.cfg
    kept: list[Group] = []
    collected: list[Group] = []
    tasks_kept = 0  # tasks with a kept group (a self-play game gives a group per seat: collect's ids say whose)
    for round_ in range(1 + (cfg.filters.max_refill_rounds if cfg.filters.drop_zero_variance_groups else 0)):
        tasks = [task(session, it, round_, i) for i in range(cfg.tasks_per_iteration - tasks_kept)]
        offset = len(collected)  # group ids follow every group collected so far, kept or dropped: never reused
        groups = collect_round(session, tasks, derive_seed(cfg.seed, it, round_), offset, it, keep)
        if session.judging is not None:  # reward sources: judges' verdicts into outcomes and step rewards
            session.judging.score(groups)
        if session.league is not None:  # the league games' Elo ratings
            session.league.record(groups)
        shape(groups, cfg.shaping, cfg.rollout.max_new_tokens)
        if session.lengths is not None:  # HAPO's length reward against each task's shortest success so far
            session.lengths.shape(groups, cfg.shaping.hapo_weight)
        collected += groups
        groups = drop_env_errors(groups)  # infra failures are not policy samples: out of credit and baselines
        if session.replay is not None and cfg.replay.mode == "arpo":  # a stored success into all-failure groups
            groups, _ = replay.inject(groups, session.replay, derive_seed(cfg.seed, it, round_, "arpo"))
        survivors = drop_zero_variance(groups) if cfg.filters.drop_zero_variance_groups else groups
        kept += survivors
        tasks_kept += len({(g.group_id - offset) % len(tasks) for g in survivors})
        if tasks_kept >= cfg.tasks_per_iteration:
            break
    branched = branch(session, kept, it) if cfg.rollout.branch_roots else []  # continuations from shared prefixes
    return kept + branched, collected + branched


def branch(session: Session, groups: list[Group], it: int) -> list[Group]:
    """Branching rollouts (``clew.trainer.branching``): ``rollout.branch_k`` continuations from a cut of
    ``rollout.branch_roots`` episodes per group, one new group per branch point (ids after the batch's), shaped and
    with infra failures (a replay that diverged) left out."""
    cfg, actor = session.cfg, session.actor
    assert actor is not None  # an env run (the config refuses harness runs)
    rollout = cfg.rollout
    points = branching.branch_points(
        groups, rollout.branch_roots, rollout.branch_at, derive_seed(cfg.seed, it, "branch")
    )
    if not points:
        return []
    tasks = [Task(cfg.env.id, root.seed, _task_kwargs(session, it, root.seed), tuple(root.turns[:t]))
             for root, t in points]  # fmt: skip
    envs = session.env_hosts.make if session.env_hosts else None
    many = rollout.model_copy(update={"group_size": rollout.branch_k})
    offset = 1 + max(g.group_id for g in groups)
    new = collect(actor, tasks, many, derive_seed(cfg.seed, it, "branches"), session.framing, offset, env_factory=envs)
    if session.judging is not None:
        session.judging.score(new)
    shape(new, cfg.shaping, rollout.max_new_tokens)
    return drop_env_errors(new)


def _task_kwargs(session: Session, it: int, seed: int) -> dict[str, Any]:
    cfg = session.cfg
    return curriculum.task_kwargs(cfg.curriculum, cfg.env.kwargs, session.curriculum, it, cfg.iterations, seed)


def task(session: Session, it: int, round_: int, i: int) -> Task:
    cfg = session.cfg
    seed = derive_seed(cfg.seed, it, round_, i) % (cfg.env.train_seeds or 500_000)  # < 500k (SFT, eval above)
    kwargs = _task_kwargs(session, it, seed)
    return Task(cfg.env.id, seed, session.league.task_kwargs(kwargs, it, seed) if session.league else kwargs)


def collect_round(
    session: Session, tasks: list[Task], seed: int, offset: int, it: int, keep: bool = False
) -> list[Group]:
    """One rollout round; an engine failure reopens the engine and retries the round once (the episodes that
    ended before it are kept when ``keep``)."""
    envs = session.env_hosts.make if session.env_hosts else None
    kept = _Kept(session, it, seed) if keep else None
    try:
        groups = _collect(session, tasks, seed, offset, envs, kept)
    except Exception as first:  # env failures are recorded inside collect: this is the engine
        session.recorder.log("engine_restart", {"error": repr(first)[:500]}, iteration=it)
        assert session.link is not None
        session.link.engine.close()
        connect(session)
        try:
            groups = _collect(session, tasks, seed, offset, envs, kept)
        except Exception as second:
            raise EngineError(
                f"the {session.cfg.rollout.engine} engine failed twice during the rollout of iteration {it} "
                f"({second!r}); the run stopped and resumes from its last checkpoint with --resume"
            ) from second
    if session.env_hosts and not session.env_hosts.alive:
        raise EnvWorkerError(
            "every env host died more than cluster.max_restarts times; the run stopped (its last checkpoint is "
            "intact: --resume once the cluster is healthy)"
        )
    return groups


@dataclasses.dataclass
class _Kept:
    """One round's episodes in the run's episode log: those that ended before a kill, and a recorder for the rest."""

    session: Session
    it: int
    seed: int

    def finished(self) -> dict[tuple[int, int], Episode]:
        return self.session.episodes.finished(self.it, self.seed)

    def record(self, episode: Episode, member: int) -> None:
        if episode.failure != "infra":  # not the policy's sample: played again after a retry or a resume
            self.session.episodes.record(self.it, self.seed, episode, member)


def _collect(
    session: Session, tasks: list[Task], seed: int, offset: int, envs: Callable[..., Env] | None, kept: _Kept | None
) -> list[Group]:
    cfg = session.cfg
    if session.harness is not None:  # a harness's sessions are not replayable: its episodes are not kept
        assert session.gateway is not None
        rollout = cfg.rollout
        return session.harness.collect(session.gateway, tasks, rollout.group_size, seed, offset, rollout.temperature)
    assert session.actor is not None
    return collect(
        session.actor, tasks, cfg.rollout, seed, session.framing, offset, env_factory=envs,
        finished=kept.finished() if kept else None, on_episode=_on_episode(session, kept),
    )  # fmt: skip


def _on_episode(session: Session, kept: _Kept | None) -> Callable[[Episode, int], None] | None:
    """What happens as an episode ends: it is kept (a kill does not lose it) and its judgements start."""
    hooks = [h for h in (kept.record if kept else None, session.judging.on_episode if session.judging else None) if h]
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def both(episode: Episode, member: int) -> None:
        for hook in hooks:
            hook(episode, member)

    return both


def league(session: Session, it: int) -> dict[str, float]:
    """Every ``league.snapshot_every`` iterations the updated policy joins the opponent pool; the league's ratings."""
    if session.league is None:
        return {}
    if (it + 1) % session.cfg.league.snapshot_every == 0:
        session.league.snapshot(session.policy.model, session.policy.tokenizer, it + 1)
    return session.league.metrics()


def credit(session: Session, table: TurnTable) -> credit_lib.Credit:
    """The configured estimator on the table, with what it needs beyond the rollout (``clew.trainer.credit_inputs``:
    reference log-probs, hidden states, beliefs in the gold answer, values, a greedy baseline) and their seconds."""
    inp, extra = credit_input(session, table)
    out = credit_lib.compute(session.cfg.credit.name, inp, **session.cfg.credit.params)
    return dataclasses.replace(out, diagnostics={**out.diagnostics, **extra}) if extra else out


def distill(session: Session, table: TurnTable, credit: credit_lib.Credit) -> tuple[credit_lib.Credit, Any]:
    """On-policy distillation (``clew.trainer.distill``): the teacher scores every sampled token; in ``advantage`` mode
    its reverse KL joins the credit's token advantages, in ``loss`` mode its log-probs (NaN where the quality gate
    leaves an episode out) are returned for the rows. (credit, teacher log-probs (K,) or None)."""
    cfg = session.cfg.distill
    if session.teacher is None:
        return credit, None
    start, train = time.perf_counter(), session.cfg.train
    turns = [(t.prompt_ids, t.action_ids) for t in table.turns]
    teacher = distillation.teacher_logprobs(session.teacher, turns, train.microbatch_rows, train.dtype,
                                            session.cfg.rollout.temperature or 1.0)  # fmt: skip
    gate = distillation.gate_tokens(table, cfg.gate)
    diagnostics = {**distillation.diagnostics(table.logprob, teacher, table, cfg.gate),
                   "time/distill_teacher_s": time.perf_counter() - start}  # fmt: skip
    credit = dataclasses.replace(credit, diagnostics={**credit.diagnostics, **diagnostics})
    if cfg.mode == "loss":
        return credit, np.where(gate, teacher, np.nan)
    term = distillation.reverse_kl_advantage(table.logprob, teacher, gate, cfg.coef)
    return distillation.with_teacher_advantage(credit, table, term), None


Selected = tuple[list[TokenRow], dict[str, float]]  # (rows for the update, what the selection kept)


def select(session: Session, table: TurnTable, rows: list[TokenRow], it: int) -> Selected:
    """The rows the update sees, and what the selection kept: LOOP's advantage filter, D³S's sample and token
    down-sampling on their schedule (``clew.trainer.downsample``), then the seeded row cap. D³S's entropies are the
    engine's where it reported them, else one no-grad forward of the kept rows."""
    cfg, filters = session.cfg, session.cfg.filters
    before, metrics = len(rows), dict[str, float]()
    entropies = downsample.row_entropies(rows, table.entropy, table.trained_tokens) if filters.d3s_tokens else None
    keep = list(range(len(rows)))
    if filters.min_abs_advantage is not None:
        keep = downsample.drop_small_advantages(rows, filters.min_abs_advantage)
    progress = it / max(cfg.iterations - 1, 1)
    if filters.d3s_samples is not None:
        n = round(downsample.schedule(*filters.d3s_samples, progress))
        groups = [e.group_id for e in table.episodes]
        keep = [keep[i] for i in downsample.select_samples([rows[i] for i in keep], groups, n, filters.d3s_scope)]
        metrics["select/d3s_samples_per_group"] = float(n)
    rows = [rows[i] for i in keep]
    if filters.d3s_tokens is not None and rows:
        share = downsample.schedule(*filters.d3s_tokens, progress)
        start, policy, train = time.perf_counter(), session.policy, cfg.train
        entropies = [entropies[i] for i in keep] if entropies is not None else token_entropies(
            policy.model, rows, policy.pad_id, train.microbatch_rows, train.dtype, cfg.rollout.temperature or 1.0
        )  # fmt: skip
        rows = downsample.keep_tokens(rows, entropies, share)
        metrics.update({"select/d3s_token_share": share, "time/select_entropy_s": time.perf_counter() - start})
    rows = cap_rows(rows, filters, derive_seed(cfg.seed, it, "cap"))
    metrics["select/rows_kept_share"] = len(rows) / before if before else 1.0
    return rows, metrics


def update(
    session: Session, rows: list[TokenRow], it: int, table: TurnTable | None = None
) -> tuple[dict[str, float], Rollout | None]:
    """The learner's update. With ``rollout.max_staleness >= 1`` the next iteration's rollout runs meanwhile,
    sampled by the weights before this update (one update behind): the update on the learner ranks of a
    cluster, or in one process in a thread of its own (the engine then samples from its own weights). With
    ``preference.loss`` the update is preference steps on the ``table``'s episodes instead."""
    cfg, learner = session.cfg, session.learner
    seed = derive_seed(cfg.seed, it, "update")
    if cfg.preference.loss is not None and table is not None:
        data = prefer.from_episodes(table.episodes, [e.group_id for e in table.episodes], policy_scores(session))
        return preference_update(session, data, it), None
    if not (cfg.rollout.max_staleness > 0 and it + 1 < cfg.iterations):
        return learner.update(rows, seed), None
    start = time.perf_counter()
    if isinstance(learner, LearnerGroup):
        pending = learner.start(rows, seed)
        ahead = rollout(session, it + 1, keep=False)
        return {**learner.finish(pending), "time/rollout_ahead_s": time.perf_counter() - start}, ahead
    with ThreadPoolExecutor(1, thread_name_prefix="clew-learner") as pool:
        done = pool.submit(learner.update, rows, seed)
        ahead = rollout(session, it + 1, keep=False)
        ahead_s = time.perf_counter() - start
        return {**done.result(), "time/rollout_ahead_s": ahead_s}, ahead


def policy_scores(session: Session) -> Callable[[list[prefer.Row]], np.ndarray]:
    """Each (prompt, action) row's summed action log-prob under the policy's current weights (temperature 1)."""
    policy, train = session.policy, session.cfg.train
    return lambda rows: span_logprobs(policy.model, [r[0] for r in rows], [r[1] for r in rows], policy.pad_id,
                                      train.microbatch_rows, train.dtype, "sum")  # fmt: skip


def preference_update(session: Session, data: prefer.Episodes, it: int) -> dict[str, float]:
    """One pass of preference steps over ``data`` with the learner's model and optimizer (its learning rate)."""
    learner, cfg = session.learner, session.cfg
    assert isinstance(learner, Learner)  # the config refuses preference training on a cluster
    for group in learner.optimizer.param_groups:
        group["lr"] = learner.lr() * group.get("lr_scale", 1.0)
    metrics = prefer.train_on(data, cfg.preference, learner.model, learner.optimizer, session.policy.pad_id,
                              cfg.train.microbatch_rows, cfg.train.dtype, cfg.train.max_grad_norm,
                              derive_seed(cfg.seed, it, "preference"))  # fmt: skip
    learner.steps += int(metrics["train/optimizer_steps"])
    return metrics


def imitation(session: Session, table: TurnTable, it: int) -> list[TokenRow]:
    """Self-imitation rows (``replay.mode=sil``): stored successes with advantage max(R - the batch's mean outcome,
    0), episode ids after the table's."""
    cfg = session.cfg
    if session.replay is None or cfg.replay.mode != "sil" or not table.episodes:
        return []
    stored = session.replay.sample(cfg.replay.per_iteration, derive_seed(cfg.seed, it, "replay"))
    baseline = float(np.mean([e.outcome for e in table.episodes]))
    return replay.imitation_rows(stored, baseline, len(table.episodes), cfg.train.merge_prefix)


def remember(session: Session, groups: list[Group], collected: list[Group], imitation_rows: int) -> dict[str, float]:
    """Store the fresh successes of ``collected``; the replay's metrics (the replayed episodes in ``groups`` are those
    that were not collected this iteration)."""
    if session.replay is None:
        return {}
    fresh = {id(e) for g in collected for e in g.episodes}
    injected = sum(id(e) not in fresh for g in groups for e in g.episodes)
    added = session.replay.add(collected)
    return {"replay/injected": float(injected), "replay/imitation_rows": float(imitation_rows),
            "replay/added": float(added), "replay/stored": float(len(session.replay.episodes))}  # fmt: skip


def watch(session: Session, metrics: dict[str, float], iteration: int) -> dict[str, float]:
    """The monitor's ``monitor/*`` flags for this iteration (``clew.trainer.monitor``); a detector that trips now is
    logged as a ``monitor`` record. It reads the evaluations the run has logged since it last looked."""
    monitor = session.monitor
    if monitor is None:
        return {}
    seen = {e.get("iteration") for e in monitor.evals}
    records = read_jsonl(session.run_dir / "metrics.jsonl")
    evals = [r for r in records if r.get("kind") == "eval" and r.get("iteration") not in seen]
    flags, fresh = monitor.observe({**metrics, "iteration": iteration}, evals)
    for name in fresh:
        session.log("monitor", {"detector": name, "stops_run": name in monitor.cfg.stop_on}, iteration=iteration)
    return flags
