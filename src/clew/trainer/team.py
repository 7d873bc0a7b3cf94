"""A team of policies (``roles: [solver, verifier]``): one policy per seat of a multi-seat game, trained together.

Each role is a run of its own under ``<run>/roles/<role>/``: its policy (a copy of ``policy.model``), optimizer,
credit, SFT on its own seat's demos (``sft.seat``), metrics, trajectories and checkpoints, opened as an ordinary
session (``roles`` unset). Every iteration one rollout plays every game with the whole team (``SeatActors``: the
seat to act asks its role's engine), each seat its own episode and group (``clew.rollout.seats``), and each role
then trains on its own seat's groups: credit, update, sync and record as a single-policy run does
(``clew.trainer.loop.learn``). Held-out evaluation plays the team too; each role reports its own seat.

Engine cost: one engine and one model copy per role. The ``hf`` engine samples from each role's learner weights
(no extra copy); ``vllm`` opens one engine per role. One base model with an adapter per role behind one vLLM
engine is not wired: vLLM's LoRA path measured 45 tok/s against 136 merged (benchmarks/README.md), so an engine
per role is also the faster choice at these sizes. ``--resume`` restores every role from its checkpoint at the
latest iteration all roles saved (a kill between two roles' saves leaves one role ahead: its newer checkpoint is
dropped); with no common iteration left (``keep_checkpoints``) the run refuses to resume.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clew.envs import Closeable, HasSeats, make
from clew.rollout import PolicyActor, SeatActors
from clew.store.run import atomic_write_text, checkpoints
from clew.trainer import reporting, stages
from clew.trainer.checkpoint import TrainerState, saved_iteration
from clew.trainer.config import RunConfig, dump_config
from clew.trainer.loop import learn
from clew.trainer.record import Reporter
from clew.trainer.session import Session, close, open_session
from clew.types import Group


@dataclass
class Teammates:
    """A role's view of its team: its seat, and the team as one actor (each seat its role's engine)."""

    sessions: list[Session]
    seat: int

    def actor(self, temperature: float) -> SeatActors:
        actors = []
        for session in self.sessions:
            assert session.link is not None
            actors.append(PolicyActor(session.link.engine, session.sampling(temperature)))
        return SeatActors(actors)


def role_config(cfg: RunConfig, seat: int) -> RunConfig:
    """The run of one role: no roles of its own, SFT on its seat's demos."""
    return cfg.model_copy(update={"roles": (), "sft": cfg.sft.model_copy(update={"seat": seat})})


def seat_groups(groups: list[Group], seat: int) -> list[Group]:
    return [g for g in groups if g.episodes and g.episodes[0].agent == seat]


def check_team_env(cfg: RunConfig) -> None:
    """The env must hand every seat's move to the caller, one seat per role."""
    env = make(cfg.env.id, **cfg.env.kwargs)
    try:
        seats = env.seats() if isinstance(env, HasSeats) else 1
    finally:
        if isinstance(env, Closeable):
            env.close()
    if seats != len(cfg.roles):
        raise ValueError(
            f"roles={list(cfg.roles)} names {len(cfg.roles)} policies, but {cfg.env.id} with env.kwargs "
            f"{dict(cfg.env.kwargs)} hands {seats} seat(s) to the caller (clew.envs.HasSeats); a team needs a game "
            "whose every seat acts through the env (e.g. solve-verify-v0, or textarena with opponent: self)"
        )


def align_checkpoints(role_dirs: list[Path]) -> None:
    """Drop each role's checkpoints newer than the latest iteration every role saved."""
    saved = [{saved_iteration(c): c for c in checkpoints(d)} for d in role_dirs]
    common = set.intersection(*(set(s) for s in saved)) if all(saved) else set()
    if not common and any(saved):
        stops = {d.name: sorted(s) for d, s in zip(role_dirs, saved)}
        raise RuntimeError(f"the roles share no checkpoint iteration ({stops}); this team run cannot resume")
    for by_iteration in saved:
        for iteration, path in by_iteration.items():
            if iteration > max(common, default=0):
                shutil.rmtree(path)


@dataclass
class TeamTrainer:
    """Trains ``cfg.roles`` together into ``run_dir``; ``fit`` mirrors ``Trainer.fit``."""

    cfg: RunConfig
    run_dir: Path
    report: Reporter | None = None
    sessions: list[Session] = field(default_factory=list, init=False)

    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        torch.set_num_threads(self.cfg.threads)
        check_team_env(self.cfg)
        if not resume:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))  # what --resume reads
        if resume:
            align_checkpoints([self.role_dir(role) for role in self.cfg.roles])
        states: list[TrainerState] = []
        fresh = True
        try:
            for seat, role in enumerate(self.cfg.roles):
                report = self.report if seat == 0 else None  # the CLI's progress follows the first role
                session, state, fresh = open_session(role_config(self.cfg, seat), self.role_dir(role), resume, report)
                self.sessions.append(session)
                states.append(state)
            return self._fit(states, fresh, stop_after)
        finally:
            for session in self.sessions:
                close(session)

    def role_dir(self, role: str) -> Path:
        return self.run_dir / "roles" / role

    def _fit(self, states: list[TrainerState], fresh: bool, stop_after: int | None) -> dict[str, Any]:
        cfg, sessions = self.cfg, self.sessions
        if len({s.iteration for s in states}) > 1:
            stops = {role: s.iteration for role, s in zip(cfg.roles, states)}
            raise RuntimeError(f"the roles' last checkpoints are at different iterations {stops}; resume needs one")
        for seat, session in enumerate(sessions):
            session.team = Teammates(sessions, seat)
            if fresh and cfg.eval.at_start:
                reporting.evaluate_held_out(session, states[seat])
        lead = sessions[0]  # its rollout plays the whole team; each role learns from its seat
        for it in range(states[0].iteration, cfg.iterations):
            if stop_after is not None and it >= stop_after:
                break
            start = time.perf_counter()
            lead.actor = Teammates(sessions, 0).actor(cfg.rollout.temperature)
            groups, collected = stages.rollout(lead, it)
            for seat, session in enumerate(sessions):
                rolled = (seat_groups(groups, seat), seat_groups(collected, seat))
                states[seat], _ = learn(session, states[seat], it, rolled, 0, start)
        summaries = {role: reporting.finish(s, st) for role, s, st in zip(cfg.roles, sessions, states)}
        return {**summaries[cfg.roles[0]], "roles": summaries}
