"""The training loop of DESIGN.md section 5: rollout -> shape -> credit -> select -> update -> sync -> record."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clew import credit as credit_lib
from clew.envs import Closeable, Env, HasStateKey
from clew.envs import make as make_env
from clew.envs.corpus import sample_texts
from clew.envs.pool import EnvWorkerError
from clew.envs.remote import EnvHosts
from clew.eval import EvalResult, diagnose, ending_shares, eval_tasks, evaluate, summarize
from clew.eval.diagnose import mean_shares
from clew.policy import Engine, EngineError, HFPolicy, SamplingParams, TinyModelConfig, build_tiny
from clew.policy.remote import RayEngines
from clew.rollout import Framing, PolicyActor, ScriptedActor, Task, collect, derive_seed, env_turns
from clew.rollout.batch import to_rows
from clew.store.run import atomic_write_text, checkpoints, clean_partials, read_jsonl
from clew.table import TurnTable
from clew.tensors import TokenRow
from clew.trainer import weights
from clew.trainer.checkpoint import TrainerState, load_probe, load_state, save_checkpoint
from clew.trainer.cluster import Cluster
from clew.trainer.config import RunConfig, dump_config
from clew.trainer.distributed import LearnerGroup
from clew.trainer.learner import Learner, sft
from clew.trainer.record import Recorder, rollout_metrics, write_iteration
from clew.trainer.select import cap_rows, drop_env_errors, drop_zero_variance, shape
from clew.trainer.states import prompt_states
from clew.trainer.sync import EngineLink, open_engine, probe_prompts
from clew.types import Group

Reporter = Callable[[str, dict[str, float]], None]
DIAGNOSIS_ITERATIONS = 3  # the last iterations whose rollouts the end-of-run diagnosis reads


@dataclass
class Trainer:
    """Owns the policy, the learner and the run directory; ``fit`` is the whole algorithm."""

    cfg: RunConfig
    run_dir: Path
    report: Reporter | None = None

    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Train for ``cfg.iterations`` (or until ``stop_after`` iterations, for tests)."""
        torch.set_num_threads(self.cfg.threads)
        self.cluster = Cluster.connect(self.cfg.cluster) if self.cfg.cluster else None
        self.env_hosts: EnvHosts | None = None  # opened with the engines on a cluster with env_workers
        try:
            return self._fit(resume, stop_after)
        finally:
            self._close()

    def _fit(self, resume: bool, stop_after: int | None) -> dict[str, Any]:
        cfg = self.cfg
        state, fresh = self._setup(resume)
        if fresh and cfg.eval.at_start:
            self._evaluate(state)
        ahead: tuple[list[Group], list[Group]] | None = None  # a rollout made during the last update
        for it in range(state.iteration, cfg.iterations):
            if stop_after is not None and it >= stop_after:
                break
            start = time.perf_counter()
            groups, collected = ahead or self._rollout(it)  # rollout + shape (+ dynamic sampling refill)
            staleness = int(ahead is not None)
            table = TurnTable.from_groups(groups)  # flattened once: credit, rows and the store read it
            credit = self._credit(table)  # advantages
            rows = cap_rows(
                to_rows(table, credit.turn_advantage, credit.token_advantage, cfg.train.merge_prefix),
                cfg.filters,
                derive_seed(cfg.seed, it, "cap"),
            )  # select
            rollout_s = time.perf_counter() - start
            metrics, ahead = self._update(rows, it)  # update (and, off-policy, the next rollout meanwhile)
            metrics.update(self.link.sync(it))  # sync: weights to the engine, checked by the parity probe
            metrics["rollout/staleness"] = staleness
            env_steps = sum(env_turns(e) for g in collected for e in g.episodes)  # summaries are not env steps
            state = TrainerState(it + 1, self.learner.steps, state.env_steps + env_steps)
            metrics.update(rollout_metrics(collected))
            self._record(state, table, credit, metrics, len(rows), rollout_s, time.perf_counter() - start, collected)
        return self._finish(state)

    # --- stages -----------------------------------------------------------------------------------
    def _setup(self, resume: bool) -> tuple[TrainerState, bool]:
        check_env_serves(self.cfg)
        self.recorder = Recorder(self.run_dir)
        if not resume and checkpoints(self.run_dir):
            raise ValueError(f"{self.run_dir} already holds a run; resume it (--resume) or choose another --out")
        found = checkpoints(self.run_dir) if resume else []
        source: str | Path
        if resume:
            clean_partials(self.run_dir)
        if found:
            self.policy, source = weights.from_checkpoint(found[-1] / "policy", self.run_dir, self.cfg)
        else:
            self.recorder.write_header(dump_config(self.cfg))
            self.policy, source = self._initial_policy()
        self.framing = Framing(self.policy.tokenizer, self.policy.chat)
        self.source = source
        self._connect()
        reference = weights.reference_model(self.run_dir, self.cfg) if found else None
        parts = (self.policy, self.cfg.train, self.cfg.objective, self.cfg.rollout.temperature, reference)
        self.learner: Learner | LearnerGroup = (
            self.cluster.learners(*parts)
            if self.cluster
            else Learner(*parts, reference_for_credit=weights.needs_reference(self.cfg))
        )
        if not found:
            return TrainerState(0, 0, 0), True
        state = load_state(found[-1], self.learner.optimizer)
        probe = load_probe(found[-1])
        if probe:
            self.learner.restore_guard(probe)
        self.learner.steps = state.optimizer_steps
        self.recorder.truncate(state.iteration)
        return state, False

    def _connect(self) -> None:
        """Open the rollout engine on the learner's current weights and verify them with the parity probe."""
        cfg = self.cfg
        if self.cluster:
            engine: Engine = self.cluster.engines(cfg.rollout, self.source)
            self.env_hosts = self.env_hosts or self.cluster.env_hosts(cfg.rollout.env_step_timeout_s)
        else:
            engine = open_engine(cfg.rollout, self.policy, self.source)
        workers = cfg.cluster.rollout_workers if cfg.cluster else 1
        prompts = probe_prompts(cfg.env.id, dict(cfg.env.kwargs), self.framing, workers)  # every worker probed
        shared = not self.cluster and cfg.rollout.max_staleness == 0  # else the engine has weights of its own
        self.link = EngineLink(engine, self.policy, prompts, cfg.rollout, shared=shared)
        self.recorder.log("engine", {"engine/name": cfg.rollout.engine, **self.link.sync(-1)})
        self.actor = PolicyActor(engine, self._sampling(cfg.rollout.temperature))

    def _initial_policy(self) -> tuple[HFPolicy, str | Path]:
        """The policy RL starts from and the directory (or HF name) of its base weights."""
        cfg = self.cfg
        source: str | Path = cfg.policy.model
        if cfg.policy.model == "tiny":
            p = cfg.policy
            tiny = TinyModelConfig(
                hidden_size=p.hidden_size, num_layers=p.num_layers, num_heads=p.num_heads,
                intermediate_size=p.intermediate_size, seed=p.init_seed,
            )  # fmt: skip
            texts = sample_texts(env_id=cfg.env.id, env_kwargs=dict(cfg.env.kwargs))
            source = build_tiny(self.run_dir / "base", texts, tiny)
        policy = HFPolicy.from_pretrained(source)
        if cfg.sft.enabled:
            policy = self._sft(weights.with_adapters(policy, cfg, "sft"))  # adapters folded in after SFT
        return weights.with_adapters(policy, cfg, "rl"), source  # LoRA targets are checked against the model

    def _sft(self, policy: HFPolicy) -> HFPolicy:
        """Warm start on scripted-expert episodes with a fraction of deliberately noisy actions; returns the
        plain model (LoRA adapters trained here are folded in) that RL starts from."""
        cfg = self.cfg
        actor = ScriptedActor("expert", noise=cfg.sft.noise, tokenizer=policy.tokenizer)
        n_tasks = -(-cfg.sft.episodes // cfg.rollout.group_size)
        tasks = [Task(cfg.env.id, cfg.sft.seed_offset + i, dict(cfg.env.kwargs)) for i in range(n_tasks)]
        groups = collect(
            actor, tasks, cfg.rollout, derive_seed(cfg.seed, "sft"), Framing(policy.tokenizer, policy.chat)
        )
        turns = [t for g in groups for e in g.episodes for t in e.turns if t.action_ids]
        # a scripted expert has no summaries to show: context edits are learned by RL alone
        rows = [(t.prompt_ids, t.action_ids) for t in turns if t.env_step]
        losses = sft(policy, rows, cfg.sft, derive_seed(cfg.seed, "sft-shuffle"), cfg.train.dtype)
        policy = weights.fold_adapters(policy)
        demo = summarize([e for g in groups for e in g.episodes])
        record = {"sft/rows": len(rows), "sft/loss_first": losses[0], "sft/loss_last": losses[-1]}
        record["sft/demo_success"] = demo.success_rate
        record["sft/max_action_tokens"] = max((len(ids) for _, ids in rows), default=0)  # stop token included
        self.recorder.log("sft", record)
        policy.model.save_pretrained(self.run_dir / "sft" / "policy")
        policy.tokenizer.save_pretrained(self.run_dir / "sft" / "policy")
        if self.report:
            self.report("sft", record)
        return policy

    def _sampling(self, temperature: float) -> SamplingParams:
        return SamplingParams(
            temperature=temperature, top_p=self.cfg.rollout.top_p, max_new_tokens=self.cfg.rollout.max_new_tokens
        )

    def _rollout(self, it: int) -> tuple[list[Group], list[Group]]:
        """(groups to train on, every group collected); dynamic sampling refills dropped groups."""
        cfg = self.cfg
        kept: list[Group] = []
        collected: list[Group] = []
        for round_ in range(1 + (cfg.filters.max_refill_rounds if cfg.filters.drop_zero_variance_groups else 0)):
            need = cfg.tasks_per_iteration - len(kept)
            tasks = [self._task(it, round_, i) for i in range(need)]
            groups = self._collect(tasks, derive_seed(cfg.seed, it, round_), len(kept), it)
            shape(groups, cfg.shaping, cfg.rollout.max_new_tokens)
            collected += groups
            groups = drop_env_errors(groups)  # infra failures are not policy samples: out of credit and baselines
            kept += drop_zero_variance(groups) if cfg.filters.drop_zero_variance_groups else groups
            if len(kept) >= cfg.tasks_per_iteration:
                break
        return kept[: cfg.tasks_per_iteration], collected

    def _collect(self, tasks: list[Task], seed: int, offset: int, it: int) -> list[Group]:
        """One rollout round; an engine failure reopens the engine and retries the round once."""
        envs = self.env_hosts.make if self.env_hosts else None
        try:
            groups = collect(self.actor, tasks, self.cfg.rollout, seed, self.framing, offset, env_factory=envs)
        except Exception as first:  # env failures are recorded inside collect: this is the engine
            self.recorder.log("engine_restart", {"error": repr(first)[:500]}, iteration=it)
            self.link.engine.close()
            self._connect()
            try:
                groups = collect(self.actor, tasks, self.cfg.rollout, seed, self.framing, offset, env_factory=envs)
            except Exception as second:
                raise EngineError(
                    f"the {self.cfg.rollout.engine} engine failed twice during the rollout of iteration {it} "
                    f"({second!r}); the run stopped and resumes from its last checkpoint with --resume"
                ) from second
        if self.env_hosts and not self.env_hosts.alive:
            raise EnvWorkerError(
                "every env host died more than cluster.max_restarts times; the run stopped (its last checkpoint is "
                "intact: --resume once the cluster is healthy)"
            )
        return groups

    def _update(self, rows: list[TokenRow], it: int) -> tuple[dict[str, float], tuple[list[Group], list[Group]] | None]:
        """The learner's update. With ``rollout.max_staleness >= 1`` the next iteration's rollout runs meanwhile,
        sampled by the weights before this update (one update behind): the update on the learner ranks of a
        cluster, or in one process in a thread of its own (the engine then samples from its own weights)."""
        seed = derive_seed(self.cfg.seed, it, "update")
        if not (self.cfg.rollout.max_staleness > 0 and it + 1 < self.cfg.iterations):
            return self.learner.update(rows, seed), None
        start = time.perf_counter()
        if isinstance(self.learner, LearnerGroup):
            pending = self.learner.start(rows, seed)
            ahead = self._rollout(it + 1)
            ahead_s = time.perf_counter() - start
            return {**self.learner.finish(pending), "time/rollout_ahead_s": ahead_s}, ahead
        with ThreadPoolExecutor(1, thread_name_prefix="clew-learner") as pool:
            update = pool.submit(self.learner.update, rows, seed)
            ahead = self._rollout(it + 1)
            ahead_s = time.perf_counter() - start
            return {**update.result(), "time/rollout_ahead_s": ahead_s}, ahead

    def _task(self, it: int, round_: int, i: int) -> Task:
        seed = derive_seed(self.cfg.seed, it, round_, i) % 500_000  # training seeds < 500k (SFT, eval above)
        return Task(self.cfg.env.id, seed, dict(self.cfg.env.kwargs))

    def _credit(self, table: TurnTable) -> credit_lib.Credit:
        inp = credit_lib.CreditInput.from_table(table)
        name, params = self.cfg.credit.name, self.cfg.credit.params
        spec = credit_lib.get(name)
        if spec.needs_reference(params) and isinstance(self.learner, Learner):
            ref = self.learner.reference_logprobs([(t.prompt_ids, t.action_ids) for t in table.turns])
            inp = dataclasses.replace(inp, ref_logprob=np.asarray(ref, dtype=np.float64))
        if spec.needs_state_vectors(params):  # similarity anchor groups on the policy's hidden states
            train = self.cfg.train
            prompts = [t.prompt_ids for t in table.turns]
            vectors = prompt_states(self.policy.model, prompts, self.policy.pad_id, train.microbatch_rows, train.dtype)
            inp = dataclasses.replace(inp, state_vector=vectors)
        return credit_lib.compute(name, inp, **params)

    def _record(
        self, state: TrainerState, table: TurnTable, credit: Any, metrics: dict[str, float],
        n_rows: int, rollout_s: float, total_s: float, collected: list[Group],
    ) -> None:  # fmt: skip
        it = state.iteration
        record = {
            **metrics, **credit.diagnostics,
            "rollout/env_steps_total": state.env_steps, "train/rows": n_rows, "train/groups": len(set(table.group)),
            "time/rollout_s": rollout_s, "time/iteration_s": total_s,
        }  # fmt: skip
        if isinstance(self.link.engine, RayEngines):
            record["engine/worker_restarts"] = self.link.engine.restarts
        write_iteration(self.run_dir / "trajectories" / f"iter_{it:06d}.parquet", it, table, credit, collected)
        self.recorder.log("iteration", record, iteration=it)
        if self.report:
            self.report("iteration", {"iteration": it, **record})
        if self.cfg.eval.every and it % self.cfg.eval.every == 0 and it < self.cfg.iterations:
            self._evaluate(state)
        if it % self.cfg.checkpoint_every == 0 or it == self.cfg.iterations:
            save_checkpoint(
                self.run_dir,
                state,
                self.policy.model,
                self.policy.tokenizer,
                self.learner.optimizer,
                self.cfg.keep_checkpoints,
                self.learner.guard_rows(),
            )

    def _evaluate(self, state: TrainerState, episodes: int | None = None) -> EvalResult:
        cfg = self.cfg
        tasks = eval_tasks(cfg.env.id, episodes or cfg.eval.episodes, 1, cfg.env.kwargs)
        actor = PolicyActor(self.link.engine, self._sampling(cfg.eval.temperature))
        rollout = cfg.rollout.model_copy(update={"group_size": 1})
        result, groups = evaluate(actor, tasks, rollout, derive_seed(cfg.seed, "eval"), self.framing)
        record = {f"eval/{k}": v for k, v in result.as_dict().items()}
        record.update({f"eval/ended_{k}": v for k, v in ending_shares([e for g in groups for e in g.episodes]).items()})
        record["rollout/env_steps_total"] = state.env_steps
        self.recorder.log("eval", record, iteration=state.iteration)
        if self.report:
            self.report("eval", {"iteration": state.iteration, **record})
        return result

    def _finish(self, state: TrainerState) -> dict[str, Any]:
        evals = [r for r in read_jsonl(self.run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
        done = state.iteration >= self.cfg.iterations
        if done and self.cfg.eval.at_end and (not evals or evals[-1]["iteration"] != state.iteration):
            self._evaluate(state)
            evals = [r for r in read_jsonl(self.run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
        summary: dict[str, Any] = {
            "iterations": state.iteration,
            "optimizer_steps": state.optimizer_steps,
            "env_steps": state.env_steps,
        }
        if evals:
            summary["first_eval"], summary["last_eval"] = evals[0], evals[-1]
        summary["diagnosis"] = self._diagnosis()
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return summary

    def _close(self) -> None:
        """End the engine and, on a cluster, every actor (and a Ray instance the run started)."""
        link = getattr(self, "link", None)
        if self.cluster is not None:
            self.cluster.close()  # its engines and env hosts included
        elif link is not None:
            link.engine.close()

    def _diagnosis(self) -> str | None:
        """A budget that ended most episodes of the final evaluation, else of the last iterations' rollouts."""
        records = read_jsonl(self.run_dir / "metrics.jsonl")
        budgets = self.cfg.rollout.model_dump(include={"max_new_tokens", "max_turns", "max_prompt_tokens"})
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


def check_env_serves(cfg: RunConfig) -> None:
    """Fail before any work when the env lacks what the run needs: ``state_key()`` for an estimator
    that groups by exact state (GiGPO with ``state_grouping=exact``; ``normalized`` and ``similarity`` read
    the observation instead), ``expert_action()`` for SFT and ``valid_actions()`` for noisy demos.

    (Whether an env reports outcomes, ``needs_outcome``, shows only in its episodes: G-RA logs
    ``credit/outcome_reported``.)"""
    env = _probe_env(cfg)
    try:
        spec = credit_lib.get(cfg.credit.name)
        if spec.needs_env_state_keys(cfg.credit.params) and not isinstance(env, HasStateKey):
            raise ValueError(
                f"credit.name={cfg.credit.name} groups turns by environment state, but env {cfg.env.id} has no "
                "state_key() method; add one, set credit.params.state_grouping=normalized (anchor groups from the "
                "observation text) or pick an estimator without step-level grouping (e.g. credit.name=grpo)"
            )
        if cfg.sft.enabled:
            try:
                ScriptedActor("expert", noise=cfg.sft.noise).check(env)
            except ValueError as exc:
                raise ValueError(f"the SFT warm start (sft.enabled=true) on env {cfg.env.id}: {exc}") from None
    finally:
        if isinstance(env, Closeable):
            env.close()


def _probe_env(cfg: RunConfig) -> Env:
    """One env built from the config, to check its methods; a constructor failure names the config."""
    try:
        return make_env(cfg.env.id, **cfg.env.kwargs)
    except Exception as exc:
        raise ValueError(f"env.id={cfg.env.id} with env.kwargs={dict(cfg.env.kwargs)} cannot be built: {exc}") from exc
