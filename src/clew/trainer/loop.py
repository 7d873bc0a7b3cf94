"""The training loop of DESIGN.md section 5: SFT -> [rollout -> credit -> update -> sync -> record] -> checkpoint.

The loop reads a ``Session`` (``clew.trainer.session``: policy, learner, engine link, recorder; one process or
a cluster, decided there) and calls the stages (``clew.trainer.stages``) and the reporting
(``clew.trainer.reporting``) in order; it does not know where any of them runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clew.rollout import env_turns
from clew.rollout.batch import to_rows
from clew.table import TurnTable
from clew.trainer import curriculum, preference, reporting, stages
from clew.trainer.checkpoint import TrainerState
from clew.trainer.config import RunConfig
from clew.trainer.learner import SYNC_GAP
from clew.trainer.record import Reporter, rollout_metrics
from clew.trainer.session import Session, close, open_session


@dataclass
class Trainer:
    """Trains ``cfg`` into ``run_dir``; ``fit`` is the whole algorithm, top to bottom."""

    cfg: RunConfig
    run_dir: Path
    report: Reporter | None = None
    session: Session | None = field(default=None, init=False)  # open while (and after) ``fit`` runs

    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Train for ``cfg.iterations`` (or until ``stop_after`` iterations, for tests)."""
        torch.set_num_threads(self.cfg.threads)
        self.session, state, fresh = open_session(self.cfg, self.run_dir, resume, self.report)  # SFT inside
        try:
            if self.cfg.preference.data is not None:  # offline: passes over a stored run's episodes
                return self._fit_offline(self.session, state, fresh, stop_after)
            return self._fit(self.session, state, fresh, stop_after)
        finally:
            close(self.session)

    def _fit(self, session: Session, state: TrainerState, fresh: bool, stop_after: int | None) -> dict[str, Any]:
        cfg = self.cfg
        if fresh and cfg.eval.at_start:
            reporting.evaluate_held_out(session, state)
        ahead: stages.Rollout | None = None  # a rollout made during the last update (rollout.max_staleness)
        for it in range(state.iteration, cfg.iterations):
            if stop_after is not None and it >= stop_after:
                break
            start = time.perf_counter()
            groups, collected = ahead or stages.rollout(session, it)  # rollout + shape (+ dynamic sampling refill)
            state, ahead = learn(session, state, it, (groups, collected), int(ahead is not None), start)
            if session.monitor is not None and session.monitor.stops():  # monitor.stop_on
                break
        return reporting.finish(session, state)

    def _fit_offline(
        self, session: Session, state: TrainerState, fresh: bool, stop_after: int | None
    ) -> dict[str, Any]:
        """Offline preference training (``preference.data``): each iteration is one pass over the stored run's
        episodes, with the same evaluations, checkpoints, resume and summary as an RL run."""
        cfg = self.cfg
        if fresh and cfg.eval.at_start:
            reporting.evaluate_held_out(session, state)
        data = preference.offline_data(self.run_dir, cfg.preference, stages.policy_scores(session))  # the reference
        for it in range(state.iteration, cfg.iterations):
            if stop_after is not None and it >= stop_after:
                break
            start = time.perf_counter()
            metrics = stages.preference_update(session, data, it)
            assert session.link is not None
            metrics.update(session.link.sync(it, None))  # the engine evaluates the new weights
            state = TrainerState(it + 1, session.learner.steps, 0)
            passed = {"preference/episodes": float(len(data.group)), "rollout/env_steps_total": 0.0,
                      "time/iteration_s": time.perf_counter() - start}  # fmt: skip
            session.log("iteration", {**metrics, **passed}, iteration=state.iteration)
            reporting.evaluate_and_checkpoint(session, state)
        return reporting.finish(session, state)


def learn(
    session: Session, state: TrainerState, it: int, rolled: stages.Rollout, staleness: int, start: float
) -> tuple[TrainerState, stages.Rollout | None]:
    """One iteration after its rollout: credit -> update -> sync -> record; the new state and, off-policy
    (``rollout.max_staleness``), the next rollout made during the update."""
    cfg = session.cfg
    groups, collected = rolled
    table = TurnTable.from_groups(groups)  # flattened once: credit, rows and the store read it
    credit = stages.credit(session, table)  # advantages
    credit, teacher = stages.distill(session, table, credit)  # a teacher's reverse KL (distill.teacher)
    value, target = credit.value, credit.value_target
    values = (value, target) if value is not None and target is not None else None  # a critic run (GAE)
    rows = to_rows(table, credit.turn_advantage, credit.token_advantage, cfg.train.merge_prefix, values,
                   credit.clip_scale, teacher)  # fmt: skip
    rows, selected = stages.select(session, table, rows, it)  # filters, down-sampling, the row cap
    imitated = stages.imitation(session, table, it)  # stored successes, replayed (replay.mode=sil)
    rows += imitated
    rollout_s = time.perf_counter() - start
    metrics, ahead = stages.update(session, rows, it, table)  # update (off-policy: the next rollout meanwhile)
    metrics.update(selected)
    assert session.link is not None
    gap = metrics.get(SYNC_GAP) if staleness == 0 else None  # the engine's last sync, seen by the learner
    metrics.update(session.link.sync(it, gap))  # sync: weights to the engine, checked by the parity probe
    metrics["rollout/staleness"] = staleness
    env_steps = sum(env_turns(e) for g in collected for e in g.episodes)  # summaries are not env steps
    metrics.update(rollout_metrics(collected))
    metrics.update(session.judging.metrics() if session.judging else {})  # reward sources, judges' work
    metrics.update(stages.league(session, it))  # a snapshot into the opponent pool, the ratings
    metrics.update(stages.remember(session, groups, collected, len(imitated)))  # the replay store
    session.curriculum, level = curriculum.after_iteration(
        cfg.curriculum, session.curriculum, it, cfg.iterations, metrics["rollout/success_rate"]
    )  # the difficulty of the next tasks (curriculum.key)
    metrics.update(level)
    state = TrainerState(it + 1, session.learner.steps, state.env_steps + env_steps, session.curriculum.to_json())
    metrics.update(stages.watch(session, metrics, state.iteration))  # the reward-hacking monitor's flags
    seconds = (rollout_s, time.perf_counter() - start)
    reporting.record_iteration(session, state, table, credit, metrics, len(rows), seconds, collected)
    return state, ahead
