"""A run's live parts and how they are opened: the policy (built, SFT-warmed or restored), the learner (one
process or a cluster's ranks), the rollout engine with its weight link, the recorder. The loop
(``clew.trainer.loop``) only reads a ``Session``; whether it runs on a cluster is decided here."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from clew import credit as credit_lib
from clew.envs import Closeable, Env, HasGoldReply, HasStateKey
from clew.envs import make as make_env
from clew.envs.corpus import sample_texts
from clew.envs.remote import EnvHosts
from clew.eval import summarize
from clew.gateway import Gateway
from clew.gateway.harness import Harness
from clew.gateway.template import prefix_safe
from clew.policy import Engine, HFPolicy, SamplingParams, TinyModelConfig, build_tiny
from clew.rollout import Actor, Framing, PolicyActor, ScriptedActor, Task, collect, derive_seed
from clew.store.run import checkpoints, clean_partials, read_jsonl
from clew.trainer import harnessed, weights
from clew.trainer.checkpoint import TrainerState, load_probe, load_state, saved_iteration
from clew.trainer.cluster import Cluster
from clew.trainer.config import RunConfig, dump_config
from clew.trainer.costs import LengthHistory
from clew.trainer.curriculum import CurriculumState
from clew.trainer.distill import load_teacher
from clew.trainer.distributed import LearnerGroup
from clew.trainer.judging import Judging
from clew.trainer.league import League
from clew.trainer.learner import Learner
from clew.trainer.monitor import Monitor
from clew.trainer.partial import EpisodeLog
from clew.trainer.prm import ImplicitPRM
from clew.trainer.record import Recorder, Reporter
from clew.trainer.replay import ReplayBuffer
from clew.trainer.sft import sft
from clew.trainer.sync import EngineLink, open_engine, probe_prompts


class Team(Protocol):
    """A role's view of its team (``clew.trainer.team.Teammates``): its seat, and the team as one actor."""

    @property
    def seat(self) -> int: ...

    def actor(self, temperature: float) -> Actor: ...


@dataclass
class Session:
    """What a run holds while it trains (``open_session`` builds it, ``close`` ends it)."""

    cfg: RunConfig
    run_dir: Path
    recorder: Recorder
    report: Reporter | None
    cluster: Cluster | None
    policy: HFPolicy = field(init=False)
    source: str | Path = field(init=False)  # the directory (or HF name) of the policy's base weights
    framing: Framing = field(init=False)
    learner: Learner | LearnerGroup = field(init=False)
    link: EngineLink | None = None
    actor: Actor | None = None  # the rollout's: the engine at rollout.temperature, or a team's (``team``)
    env_hosts: EnvHosts | None = None  # opened with the engines on a cluster with env_workers
    harness: Harness | None = None  # a harness run (``harness:``): episodes come from the agent, through the gateway
    gateway: Gateway | None = None  # the run's engine behind the OpenAI API, for the harness
    episodes: EpisodeLog = field(init=False)  # the rollout in flight, kept as its episodes end
    prm: ImplicitPRM | None = None  # OPRL's implicit process reward model, trained beside the policy
    teacher: HFPolicy | None = None  # the on-policy distillation teacher (``distill.teacher``), frozen
    curriculum: CurriculumState = field(default_factory=CurriculumState)  # the training tasks' difficulty level
    replay: ReplayBuffer | None = None  # the run's stored successes (``replay.capacity``)
    lengths: LengthHistory | None = None  # HAPO's shortest success per task (``shaping.hapo_weight``)
    league: League | None = None  # the opponent pool and its ratings (``league.snapshot_every``)
    monitor: Monitor | None = None  # the reward-hacking and degeneracy detectors (``monitor``)
    judging: Judging | None = None  # the reward sources and their judges (``rewards``)
    team: Team | None = None  # a role of a team of policies (``roles``, ``clew.trainer.team``)

    def __post_init__(self) -> None:
        self.episodes = EpisodeLog(self.run_dir)

    def sampling(self, temperature: float) -> SamplingParams:
        rollout = self.cfg.rollout
        return SamplingParams(temperature=temperature, top_p=rollout.top_p, max_new_tokens=rollout.max_new_tokens)

    def log(self, kind: str, record: dict[str, Any], iteration: int | None = None) -> None:
        """Into metrics.jsonl, and to the reporter (the CLI's progress) when there is one."""
        self.recorder.log(kind, record, iteration=iteration)
        if self.report:
            self.report(kind, record if iteration is None else {"iteration": iteration, **record})


def open_session(
    cfg: RunConfig, run_dir: Path, resume: bool, report: Reporter | None
) -> tuple[Session, TrainerState, bool]:
    """The session, the state it starts from and whether that is a fresh start (no checkpoint to resume)."""
    if cfg.harness is None:
        check_env_serves(cfg)
    cluster = Cluster.connect(cfg.cluster) if cfg.cluster else None
    session = Session(cfg, run_dir, Recorder(run_dir), report, cluster)
    session.harness = harnessed.load_harness(cfg.harness) if cfg.harness else None
    try:
        state, fresh = _restore_or_start(session, resume)
        session.judging = Judging.open(cfg.rewards, cfg.judging) if cfg.rewards else None  # judges load here
        if cfg.monitor.enabled:  # it has seen what the run recorded (a resumed run's records, cut to its iteration)
            session.monitor = Monitor.from_records(cfg.monitor, read_jsonl(run_dir / "metrics.jsonl"))
    except BaseException:
        close(session)
        raise
    return session, state, fresh


def _restore_or_start(session: Session, resume: bool) -> tuple[TrainerState, bool]:
    cfg, run_dir = session.cfg, session.run_dir
    if not resume and checkpoints(run_dir):
        raise ValueError(f"{run_dir} already holds a run; resume it (--resume) or choose another --out")
    found = checkpoints(run_dir) if resume else []
    if resume:
        clean_partials(run_dir)
    if not found:
        session.recorder.write_header(dump_config(cfg))
    start = saved_iteration(found[-1]) if found else 0
    session.episodes.keep_only(start if found or resume else None)  # only the rollout a kill cut
    logging = cfg.logging  # the trackers see SFT's records too
    config = cfg.model_dump(mode="json")
    session.recorder.open_trackers(logging.trackers, config, logging.project, logging.run_name, start)
    if found:
        session.policy, session.source = weights.from_checkpoint(found[-1] / "policy", run_dir, cfg)
    else:
        session.policy, session.source = initial_policy(session)
    session.framing = Framing(session.policy.tokenizer, session.policy.chat)
    check_template(session)
    connect(session)
    reference = weights.reference_model(run_dir, cfg) if found else None
    parts = (session.policy, cfg.train, cfg.objective, cfg.rollout.temperature, reference)
    session.learner = (
        session.cluster.learners(*parts)
        if session.cluster
        else Learner(*parts, reference_for_credit=weights.needs_reference(cfg), critic=cfg.critic, distill=cfg.distill)
    )
    session.prm = implicit_prm(session)
    session.teacher = load_teacher(cfg.distill.teacher, session.policy) if cfg.distill.teacher else None
    session.replay = ReplayBuffer(cfg.replay.capacity, per_task=cfg.replay.per_task) if cfg.replay.capacity else None
    session.lengths = LengthHistory() if cfg.shaping.hapo_weight > 0 else None
    session.league = League(cfg.league, run_dir, cfg.seed) if cfg.league.enabled else None
    if not found:
        return TrainerState(0, 0, 0), True
    state = load_state(found[-1], session.learner.optimizer)
    session.curriculum = CurriculumState.from_json(state.curriculum)
    for part in (session.prm, session.replay, session.lengths, session.league):
        if part is not None:
            part.load(found[-1])
    if isinstance(session.learner, Learner) and session.learner.critic is not None:
        session.learner.critic.load(found[-1])
    probe = load_probe(found[-1])
    if probe:
        session.learner.restore_guard(probe)
    session.learner.steps = state.optimizer_steps
    session.recorder.truncate(state.iteration)
    return state, False


def check_template(session: Session) -> None:
    """The model's chat template should keep every turn's prompt an extension of the last (``clew.gateway.template``).
    When it does not, the prompts clew builds (token segments from the template's framing) are not what the
    template renders for the same chat at deployment: a warning; and ``train.merge_prefix``, which trains a whole
    episode as one sequence, is refused."""
    check = prefix_safe(session.policy.tokenizer)
    if check.ok:
        return
    message = f"the chat template of {session.source} fails the prefix property: {check.detail} (clew check-template)"
    if session.cfg.train.merge_prefix:
        raise ValueError(f"train.merge_prefix=true needs a prefix-safe chat template; {message}")
    session.log("warning", {"message": message})


def connect(session: Session) -> None:
    """Open the rollout engine on the learner's current weights and verify them with the parity probe."""
    cfg, cluster = session.cfg, session.cluster
    engine: Engine
    if cluster:
        engine = cluster.engines(cfg.rollout, session.source)
        session.env_hosts = session.env_hosts or cluster.env_hosts(cfg.rollout.env_step_timeout_s)
    else:
        engine = open_engine(cfg.rollout, session.policy, session.source)
    workers = cfg.cluster.rollout_workers if cfg.cluster else 1
    if session.harness:
        prompts = harnessed.probe_prompts(session.harness, session.policy.tokenizer, workers)
        if session.gateway is not None:  # a reconnect after an engine failure: the gateway serves the new engine
            session.gateway.close()
        session.gateway = harnessed.open_gateway(engine, session.policy.tokenizer, cfg)
    else:
        prompts = probe_prompts(cfg.env.id, dict(cfg.env.kwargs), session.framing, workers)  # every worker probed
    shared = not cluster and cfg.rollout.max_staleness == 0  # else the engine has weights of its own
    session.link = EngineLink(engine, session.policy, prompts, cfg.rollout, shared=shared)
    session.recorder.log("engine", {"engine/name": cfg.rollout.engine, **session.link.sync(-1)})
    own = PolicyActor(engine, session.sampling(cfg.rollout.temperature))
    session.actor = session.team.actor(cfg.rollout.temperature) if session.team and session.team.seat == 0 else own


def close(session: Session) -> None:
    """End the trackers, the engine and, on a cluster, every actor (and a Ray instance the run started)."""
    session.recorder.close()
    if session.judging is not None:
        session.judging.close()
    if session.gateway is not None:
        session.gateway.close()
    if session.cluster is not None:
        session.cluster.close()  # its engines and env hosts included
    elif session.link is not None:
        session.link.engine.close()


def implicit_prm(session: Session) -> ImplicitPRM | None:
    """OPRL's PRM, a copy of the policy RL starts from (after SFT; on resume, then restored), or None."""
    cfg = session.cfg
    if not credit_lib.get(cfg.credit.name).needs_implicit_prm:
        return None
    lr = float(cfg.credit.params.get("prm_lr") or cfg.train.lr)
    return ImplicitPRM(session.policy.model, session.policy.pad_id, lr, cfg.train.microbatch_rows, cfg.train.dtype)


def initial_policy(session: Session) -> tuple[HFPolicy, str | Path]:
    """The policy RL starts from and the directory (or HF name) of its base weights."""
    cfg = session.cfg
    source: str | Path = cfg.policy.model
    if cfg.policy.model == "tiny":
        p = cfg.policy
        tiny = TinyModelConfig(
            hidden_size=p.hidden_size, num_layers=p.num_layers, num_heads=p.num_heads,
            intermediate_size=p.intermediate_size, seed=p.init_seed,
        )  # fmt: skip
        texts = sample_texts(env_id=cfg.env.id, env_kwargs=dict(cfg.env.kwargs))
        source = build_tiny(session.run_dir / "base", texts, tiny)
    policy = HFPolicy.from_pretrained(source)
    if cfg.sft.enabled:
        policy = warm_start(session, weights.with_adapters(policy, cfg, "sft"))  # adapters folded in after SFT
    return weights.with_adapters(policy, cfg, "rl"), source  # LoRA targets are checked against the model


def warm_start(session: Session, policy: HFPolicy) -> HFPolicy:
    """SFT on scripted-expert episodes with a fraction of deliberately noisy actions; returns the plain model
    (LoRA adapters trained here are folded in) that RL starts from."""
    cfg = session.cfg
    if session.harness is not None:
        groups = harnessed.demonstrations(session.harness, policy.tokenizer, cfg)
    else:
        actor = ScriptedActor("expert", noise=cfg.sft.noise, tokenizer=policy.tokenizer)
        n_tasks = -(-cfg.sft.episodes // cfg.rollout.group_size)
        tasks = [Task(cfg.env.id, cfg.sft.seed_offset + i, dict(cfg.env.kwargs)) for i in range(n_tasks)]
        framing = Framing(policy.tokenizer, policy.chat)
        groups = collect(actor, tasks, cfg.rollout, derive_seed(cfg.seed, "sft"), framing)
    episodes = [e for g in groups for e in g.episodes]
    episodes = [e for e in episodes if cfg.sft.seat is None or e.agent == cfg.sft.seat]  # a team role's own seat
    won = [e for e in episodes if session.harness is None or (e.error is None and e.outcome > 0)]  # a harness's
    turns = [t for e in won for t in e.turns if t.action_ids]  # expert can fail: SFT copies its wins only
    # a scripted expert has no summaries to show: context edits are learned by RL alone
    rows = [(t.prompt_ids, t.action_ids) for t in turns if t.env_step]
    warn_short_budget(rows, cfg.rollout.max_new_tokens)
    report = session.report

    def on_step(done: int, total: int, loss: float) -> None:  # the CLI's bar only: metrics.jsonl keeps the summary
        if report and (done % 10 == 0 or done == total):
            report("sft_step", {"sft/step": done, "sft/steps": total, "sft/loss": loss})

    losses = sft(policy, rows, cfg.sft, derive_seed(cfg.seed, "sft-shuffle"), cfg.train.dtype, on_step)
    policy = weights.fold_adapters(policy)
    demo = summarize(episodes)
    record = {"sft/rows": len(rows), "sft/loss_first": losses[0], "sft/loss_last": losses[-1]}
    record["sft/demo_success"] = demo.success_rate
    record["sft/max_action_tokens"] = max((len(ids) for _, ids in rows), default=0)  # stop token included
    session.log("sft", record)
    policy.model.save_pretrained(session.run_dir / "sft" / "policy")
    policy.tokenizer.save_pretrained(session.run_dir / "sft" / "policy")
    return policy


def warn_short_budget(rows: list[tuple[list[int], list[int]]], max_new_tokens: int) -> None:
    """Say so before SFT trains when the demos' actions do not fit the rollout's token budget: every such action
    would end its episode at ``max_new_tokens`` (a run that looks like a weak policy for its whole length)."""
    longest = max((len(ids) for _, ids in rows), default=0)  # the stop token included
    too_long = sum(len(ids) > max_new_tokens for _, ids in rows)
    if too_long:
        warnings.warn(
            f"{too_long} of {len(rows)} SFT demo actions take more than rollout.max_new_tokens={max_new_tokens} "
            f"tokens (the longest {longest}, its stop token included): the policy cannot finish those actions; "
            f"set rollout.max_new_tokens={longest} or more",
            stacklevel=2,
        )


def check_env_serves(cfg: RunConfig) -> None:
    """Fail before any work when the env lacks what the run needs: ``state_key()`` for an estimator
    that groups by exact state (GiGPO with ``state_grouping=exact``; ``normalized`` and ``similarity`` read
    the observation instead), ``gold_reply()`` for estimators that score the policy against the answer (IGPO, PBSD),
    ``expert_action()`` for SFT and ``valid_actions()`` for noisy demos.

    (Whether an env reports outcomes, ``needs_outcome``, shows only in its episodes: G-RA logs
    ``credit/outcome_reported``.)"""
    env = _probe_env(cfg)
    for level in cfg.curriculum.levels:  # every level must build (the env's own check of the keyword)
        _close(_probe_env(cfg, {str(cfg.curriculum.key): level}))
    try:
        spec = credit_lib.get(cfg.credit.name)
        if spec.needs_env_state_keys(cfg.credit.params) and not isinstance(env, HasStateKey):
            raise ValueError(
                f"credit.name={cfg.credit.name} groups turns by environment state, but env {cfg.env.id} has no "
                "state_key() method; add one, set credit.params.state_grouping=normalized (anchor groups from the "
                "observation text) or pick an estimator without step-level grouping (e.g. credit.name=grpo)"
            )
        if spec.needs_gold_reply and not isinstance(env, HasGoldReply):
            raise ValueError(
                f"credit.name={cfg.credit.name} scores the policy against each task's gold answer, but env "
                f"{cfg.env.id} has no gold_reply() method (clew.envs.HasGoldReply: toolcalc-v0, tir/*, rg/* datasets "
                "with answers); add one or pick an estimator without it (e.g. credit.name=grpo)"
            )
        if cfg.sft.enabled:
            try:
                ScriptedActor("expert", noise=cfg.sft.noise).check(env)
            except ValueError as exc:
                raise ValueError(f"the SFT warm start (sft.enabled=true) on env {cfg.env.id}: {exc}") from None
    finally:
        if isinstance(env, Closeable):
            env.close()


def _probe_env(cfg: RunConfig, update: dict[str, Any] | None = None) -> Env:
    """One env built from the config (``env.kwargs`` updated by ``update``: a curriculum level), to check its methods;
    a constructor failure names the config."""
    kwargs = {**cfg.env.kwargs, **(update or {})}
    try:
        return make_env(cfg.env.id, **kwargs)
    except Exception as exc:
        where = f" (curriculum.key={cfg.curriculum.key})" if update else ""
        raise ValueError(f"env.id={cfg.env.id} with env.kwargs={kwargs}{where} cannot be built: {exc}") from exc


def _close(env: Env) -> None:
    if isinstance(env, Closeable):
        env.close()
