"""What a run writes as it goes: each iteration's record, trajectories and checkpoint; held-out evaluations;
the summary and the end-of-run diagnosis (a budget that ended most episodes)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clew.credit import Credit
from clew.eval import EvalResult, diagnose, ending_shares, eval_tasks, evaluate, summarize
from clew.eval.diagnose import mean_shares
from clew.eval.plots import plot_run
from clew.policy.remote import RayEngines
from clew.rollout import PolicyActor, derive_seed
from clew.store.run import atomic_write_text, read_jsonl
from clew.table import TurnTable
from clew.trainer.checkpoint import TrainerState, save_checkpoint
from clew.trainer.record import write_iteration
from clew.trainer.session import Session
from clew.types import Group

DIAGNOSIS_ITERATIONS = 3  # the last iterations whose rollouts the end-of-run diagnosis reads
EVAL_COLUMNS = ("iteration", "rollout/env_steps_total", "eval/success_rate", "eval/success_low", "eval/success_high",
                "eval/mean_turns", "eval/invalid_action_rate")  # the trackers' eval table  # fmt: skip


def record_iteration(
    session: Session, state: TrainerState, table: TurnTable, credit: Credit, metrics: dict[str, float],
    n_rows: int, seconds: tuple[float, float], collected: list[Group],
) -> None:  # fmt: skip
    """Log the iteration, write its trajectories, evaluate and checkpoint when they are due; ``seconds``: (rollout
    through row selection, the whole iteration)."""
    it = state.iteration
    record = {
        **metrics, **credit.diagnostics,
        "rollout/env_steps_total": state.env_steps, "train/rows": n_rows, "train/groups": len(set(table.group)),
        "time/rollout_s": seconds[0], "time/iteration_s": seconds[1],
    }  # fmt: skip
    if session.link is not None and isinstance(session.link.engine, RayEngines):
        record["engine/worker_restarts"] = session.link.engine.restarts
    write_iteration(session.run_dir / "trajectories" / f"iter_{it:06d}.parquet", it, table, credit, collected)
    session.log("iteration", record, iteration=it)
    evaluate_and_checkpoint(session, state)
    session.episodes.drop(it - 1)  # the rollout's episodes, kept as they ended, are recorded now


def evaluate_and_checkpoint(session: Session, state: TrainerState) -> None:
    """The held-out evaluation and the checkpoint of iteration ``state.iteration``, when they are due."""
    cfg, it = session.cfg, state.iteration
    if cfg.eval.every and it % cfg.eval.every == 0 and it < cfg.iterations:
        evaluate_held_out(session, state)
    if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
        policy, learner = session.policy, session.learner
        critic = getattr(learner, "critic", None)  # a value head (a cluster's learner group has none)
        parts = (critic, session.prm, session.replay, session.lengths, session.league)
        extras = [x.save for x in parts if x is not None]  # what else the run trains or keeps
        save_checkpoint(
            session.run_dir, state, policy.model, policy.tokenizer, learner.optimizer, cfg.keep_checkpoints,
            learner.guard_rows(), _saving_all(extras) if extras else None,
        )  # fmt: skip


def evaluate_held_out(session: Session, state: TrainerState) -> EvalResult:
    """The policy on ``eval.episodes`` held-out tasks (one episode each; ``eval.env_kwargs`` over the env's) at
    ``eval.temperature``."""
    cfg = session.cfg
    assert session.link is not None
    tasks = eval_tasks(cfg.env.id, cfg.eval.episodes, 1, {**cfg.env.kwargs, **cfg.eval.env_kwargs})
    seed = derive_seed(cfg.seed, "eval")
    if session.harness is not None:  # the agent on held-out tasks, through the gateway
        assert session.gateway is not None
        groups = session.harness.collect(session.gateway, tasks, 1, seed, 0, cfg.eval.temperature)
        result = summarize([e for g in groups for e in g.episodes])
    else:
        temperature = cfg.eval.temperature
        team = session.team  # a team plays every seat; each role reports its own
        actor = team.actor(temperature) if team else PolicyActor(session.link.engine, session.sampling(temperature))
        rollout = cfg.rollout.model_copy(update={"group_size": 1})
        result, groups = evaluate(actor, tasks, rollout, seed, session.framing)
        if team is not None:
            groups = [g for g in groups if g.episodes and g.episodes[0].agent == team.seat]
            result = summarize([e for g in groups for e in g.episodes])
    judged: dict[str, float] = {}
    if session.judging is not None and cfg.judging.on_eval:  # held-out episodes scored by the reward sources too
        session.judging.score(groups)
        result = summarize([e for g in groups for e in g.episodes])
        judged = {k: v for k, v in session.judging.metrics().items() if k.startswith("rewards/")}
    record = {f"eval/{k}": v for k, v in result.as_dict().items()}
    record.update({f"eval/{k}": v for k, v in judged.items()})
    record.update({f"eval/ended_{k}": v for k, v in ending_shares([e for g in groups for e in g.episodes]).items()})
    record["rollout/env_steps_total"] = state.env_steps
    session.log("eval", record, iteration=state.iteration)
    if session.recorder.trackers:
        evals = [r for r in read_jsonl(session.run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
        session.recorder.table("eval/table", [{k.removeprefix("eval/"): r.get(k) for k in EVAL_COLUMNS} for r in evals])
    return result


def finish(session: Session, state: TrainerState) -> dict[str, Any]:
    """The final evaluation (unless one already ran at this iteration), ``summary.json`` and its diagnosis."""
    cfg, run_dir = session.cfg, session.run_dir
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
    done = state.iteration >= cfg.iterations
    if done and cfg.eval.at_end and (not evals or evals[-1]["iteration"] != state.iteration):
        evaluate_held_out(session, state)
        evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
    summary: dict[str, Any] = {
        "iterations": state.iteration,
        "optimizer_steps": state.optimizer_steps,
        "env_steps": state.env_steps,
    }
    if evals:
        summary["first_eval"], summary["last_eval"] = evals[0], evals[-1]
    summary["diagnosis"] = diagnosis(session)
    if session.monitor is not None:
        summary["monitor"] = {"tripped": sorted(session.monitor.tripped), "stopped_by": session.monitor.stops()}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    try:
        session.recorder.image("curves", plot_run(run_dir))
    except Exception as exc:  # a plot must not fail a finished run
        warnings.warn(f"curves.png was not written: {type(exc).__name__}: {exc}", stacklevel=2)
    return summary


def diagnosis(session: Session) -> str | None:
    """A budget that ended most episodes of the final evaluation, else of the last iterations' rollouts."""
    records = read_jsonl(session.run_dir / "metrics.jsonl")
    budgets = session.cfg.rollout.model_dump(include={"max_new_tokens", "max_turns", "max_prompt_tokens"})
    demos = [r["sft/max_action_tokens"] for r in records if "sft/max_action_tokens" in r]
    recent = [r for r in records if r.get("kind") == "iteration"][-DIAGNOSIS_ITERATIONS:]
    last = recent[-1]["iteration"] if recent else 0
    evals = [r for r in records if r.get("kind") == "eval" and r["iteration"] >= last][-1:]  # not a stale one
    for where, found, namespace in (("final evaluation", evals, "eval"), ("last iterations", recent, "rollout")):
        shares = mean_shares(found, namespace)
        line = diagnose(shares, budgets, demo_action_tokens=demos[-1] if demos else None)
        if line:
            return f"{where}: {line}"
    return None


def _saving_all(savers: list[Callable[[Path], None]]) -> Callable[[Path], None]:
    """One ``save_extra`` that runs each of ``savers`` on the checkpoint folder."""

    def save(folder: Path) -> None:
        for saver in savers:
            saver(folder)

    return save
