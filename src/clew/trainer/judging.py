"""The reward sources in the loop (``rewards`` and ``judging`` in the config; ``clew.rewards`` holds the parts).

One judge service per distinct judge (sources with the same model, engine, URL and context share it). Pointwise
and process judgements are submitted as each episode ends (``Judging.on_episode``), so they run while the rest of
the rollout does; rankings are submitted once the round's groups are complete. ``Judging.score`` then waits for
every verdict and rewrites outcomes and step rewards (``clew.rewards.sources.apply``) before shaping, so a failed
judgement's episode is an ``infra`` failure that ``drop_env_errors`` leaves out of credit and baselines.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clew.policy import engine_spec, make_engine
from clew.policy.hf import HFPolicy
from clew.policy.models import resolve_model
from clew.rewards import prompts
from clew.rewards.backends import EngineJudge, JudgeBackend, OpenAIJudge
from clew.rewards.parse import parse_ranking, parse_score
from clew.rewards.service import JudgeService, Verdict
from clew.rewards.sources import JudgeParams, Scores, Source, apply, judged_steps, verifier_score
from clew.trainer.data_sections import JudgingConfig
from clew.types import Episode, Group

Key = tuple[int, int]  # (group id, member)
SCORE_PREFIX = "SCORE:"  # a local judge's reply starts here (it continues the format instead of chatting)


def build_backend(params: JudgeParams) -> JudgeBackend:
    """The judge ``params`` names: an endpoint (``url``), or a registered or local model on a clew engine."""
    if params.url:
        return OpenAIJudge(params.url, params.model, params.max_context or 4096)
    folder = resolve_model(params.model)
    policy = HFPolicy.from_pretrained(folder)
    policy.model.eval()
    if engine_spec(params.engine).shares_learner_weights:
        engine = make_engine(params.engine, policy.model, tokenizer=policy.tokenizer, **params.engine_params)
    else:
        engine = make_engine(params.engine, folder, **params.engine_params)
    return EngineJudge(engine, policy.tokenizer, f"{params.engine}:{Path(folder).name}",
                       context_tokens=params.max_context)  # fmt: skip


def sources(cfg: Sequence[Any]) -> list[Source]:
    """The config's ``rewards`` entries as typed sources."""
    return [Source(r.label or r.name, r.name, r.weight, r.parsed) for r in cfg]


def _combined(verdicts: list[tuple[int, Verdict]]) -> list[tuple[int, Verdict]]:
    """One verdict per judged index: the mean of its sampled scores, failed when fewer than half of them parsed."""
    by_index: dict[int, list[Verdict]] = {}
    for index, verdict in verdicts:
        by_index.setdefault(index, []).append(verdict)
    out = []
    for index, group in by_index.items():
        ok = [v.scores for v in group if v.scores is not None]
        if 2 * len(ok) < len(group):
            failure = next(v for v in group if v.scores is None)
            out.append((index, failure))
        else:
            mean = tuple(sum(col) / len(ok) for col in zip(*ok))
            out.append((index, Verdict(mean, attempts=len(group))))
    return out


def _ranking(reply: str, n: int, scale: tuple[int, int]) -> list[float] | None:
    return parse_ranking(reply, n, scale)


@dataclass
class Judging:
    """The run's sources and judge services, and the judgements in flight for the current rollout round."""

    sources: list[Source]
    services: dict[str, JudgeService]  # by source label
    cfg: JudgingConfig
    _pending: dict[Key, dict[str, list[tuple[int, Future[Verdict]]]]] = field(default_factory=dict)
    _stats: dict[str, float] = field(default_factory=dict)

    @classmethod
    def open(cls, rewards: Sequence[Any], cfg: JudgingConfig) -> Judging:
        typed = sources(rewards)
        shared: dict[Any, JudgeService] = {}
        services: dict[str, JudgeService] = {}
        for source in typed:
            if not isinstance(source.params, JudgeParams):
                continue
            key = source.params.backend_key
            if key not in shared:
                shared[key] = JudgeService(build_backend(source.params), cfg.concurrency, cfg.timeout_s,
                                           source.params.max_tokens, cfg.temperature, cfg.retry_temperature,
                                           cfg.cache_entries)  # fmt: skip
            services[source.label] = shared[key]
        return cls(typed, services, cfg)

    def close(self) -> None:
        for service in {id(s): s for s in self.services.values()}.values():
            service.close()

    # --- submission ----------------------------------------------------------------------------------
    def on_episode(self, episode: Episode, member: int) -> None:
        """Submit the episode's pointwise and process judgements (the rollout goes on meanwhile)."""
        if episode.failure == "infra" or (episode.group_id, member) in self._pending:
            return
        mine: dict[str, list[tuple[int, Future[Verdict]]]] = {}
        for source in self.sources:
            params = source.params
            if not isinstance(params, JudgeParams) or source.name == "rank" or episode.failure == "policy":
                continue
            service = self.services[source.label]
            backend = service.backend
            if source.name == "judge":
                text = prompts.transcript(episode, reference=params.reference)
                msgs = prompts.pointwise(params.rubric, text, params.scale, backend.context_tokens, params.max_tokens,
                                         backend.count, backend.special_tokens)  # fmt: skip
                mine[source.label] = [(-1, f) for f in self._sampled(service, "judge", msgs, params, episode.seed)]
                continue
            mine[source.label] = [
                (i, f)
                for i in judged_steps(episode, params.every)
                for f in self._sampled(service, "process", self._process(episode, i, params, backend), params,
                                       episode.seed + i)
            ]  # fmt: skip
        self._pending[(episode.group_id, member)] = mine

    def _sampled(self, service: JudgeService, kind: str, msgs: prompts.Messages, params: JudgeParams,
                 seed: int) -> list[Future[Verdict]]:  # fmt: skip
        """``params.samples`` judgements of ``msgs`` (one unless the score is a mean of samples)."""
        return [service.submit(kind, msgs, self._one(params), seed + 104_729 * k, SCORE_PREFIX, params.temperature, k)
                for k in range(params.samples)]  # fmt: skip

    @staticmethod
    def _one(params: JudgeParams) -> Any:
        return lambda reply: None if (s := parse_score(reply, params.scale)) is None else [s]

    @staticmethod
    def _process(episode: Episode, index: int, params: JudgeParams, backend: JudgeBackend) -> prompts.Messages:
        text = prompts.transcript(episode, upto=index + 1, reference=params.reference)
        return prompts.pointwise(params.rubric, text, params.scale, backend.context_tokens, params.max_tokens,
                                 backend.count, backend.special_tokens, template=prompts.PROCESS)  # fmt: skip

    def _rank(self, group: Group) -> dict[str, tuple[list[int], Future[Verdict]]]:
        out = {}
        members = [m for m, e in enumerate(group.episodes) if e.failure is None]
        for source in self.sources:
            params = source.params
            if source.name != "rank" or not isinstance(params, JudgeParams) or not members:
                continue
            service = self.services[source.label]
            backend = service.backend
            texts = [prompts.transcript(group.episodes[m], reference=params.reference) for m in members]
            msgs = prompts.ranked(params.rubric, texts, params.scale, backend.context_tokens, params.max_tokens,
                                  backend.count, backend.special_tokens)  # fmt: skip
            parse = functools.partial(_ranking, n=len(members), scale=params.scale)
            out[source.label] = (members, service.submit("rank", msgs, parse, group.seed, "A:"))
        return out

    # --- scoring -------------------------------------------------------------------------------------
    def score(self, groups: Sequence[Group]) -> None:
        """Wait for every judgement of ``groups`` (submitting those not yet submitted) and apply the scores."""
        start = time.perf_counter()
        for group in groups:
            for member, episode in enumerate(group.episodes):
                self.on_episode(episode, member)
        ranks = {g.group_id: self._rank(g) for g in groups}
        counts = {"judgements": 0.0, "failed": 0.0, "unparsable": 0.0, "infra_episodes": 0.0, "disagree": 0.0,
                  "compared": 0.0}  # fmt: skip
        values: dict[str, list[float]] = {s.label: [] for s in self.sources}
        for group in groups:
            for member, episode in enumerate(group.episodes):
                if episode.failure == "infra":
                    continue
                scores = self._collect(episode, self._pending.pop((group.group_id, member), {}),
                                       ranks[group.group_id], member, counts)  # fmt: skip
                self._compare(episode, scores, counts)
                for label, value in scores.episode.items():
                    values[label].append(value)
                for label, steps in scores.steps.items():
                    values[label] += steps.values()
                counts["infra_episodes"] += scores.failed is not None
                apply(episode, self.sources, scores, self.cfg.success_threshold)
        self._pending.clear()
        self._tally(values, counts, time.perf_counter() - start)

    def _collect(self, episode: Episode, mine: dict[str, list[tuple[int, Future[Verdict]]]],
                 ranks: dict[str, tuple[list[int], Future[Verdict]]], member: int,
                 counts: dict[str, float]) -> Scores:  # fmt: skip
        scores = Scores()
        for source in self.sources:
            if source.name == "verifier":
                assert not isinstance(source.params, JudgeParams)
                scores.episode[source.label] = verifier_score(episode, source.params)
                continue
            if episode.failure == "policy":  # scored as a failure by every source, without a call
                if source.name != "process":
                    scores.episode[source.label] = 0.0
                continue
            service = self.services[source.label]
            if source.name == "rank":
                members, future = ranks[source.label]
                verdicts = [(-1, service.results([future])[0])]
            else:
                verdicts = list(zip([i for i, _ in mine[source.label]],
                                    service.results([f for _, f in mine[source.label]])))  # fmt: skip
            for index, verdict in _combined(verdicts):
                counts["judgements"] += 1
                if verdict.scores is None:
                    counts["failed"] += 1
                    counts["unparsable"] += verdict.failure == "unparsable"
                    scores.failed = scores.failed or f"{source.label}: {verdict.failure}"
                elif source.name == "rank":
                    scores.episode[source.label] = verdict.scores[members.index(member)]
                elif source.name == "judge":
                    scores.episode[source.label] = verdict.scores[0]
                else:
                    scores.steps.setdefault(source.label, {})[index] = verdict.scores[0]
        return scores

    def _compare(self, episode: Episode, scores: Scores, counts: dict[str, float]) -> None:
        """Judge vs verifier: does a judge's verdict (score >= 0.5) disagree with the env's success?"""
        if not any(s.name == "verifier" for s in self.sources) or scores.failed is not None:
            return
        for source in self.sources:
            if source.name in ("judge", "rank") and source.label in scores.episode:
                counts["compared"] += 1
                counts["disagree"] += (scores.episode[source.label] >= 0.5) != episode.success

    def _tally(self, values: dict[str, list[float]], counts: dict[str, float], wait_s: float) -> None:
        stats = self._stats
        for label, vals in values.items():
            if vals:
                stats[f"rewards/{label}/mean"] = sum(vals) / len(vals)
        judged = counts["judgements"]
        stats["rewards/judgements"] = stats.get("rewards/judgements", 0.0) + judged
        stats["rewards/judge_failed_share"] = counts["failed"] / judged if judged else 0.0
        stats["rewards/judge_unparsable_share"] = counts["unparsable"] / judged if judged else 0.0
        stats["rewards/infra_episodes"] = stats.get("rewards/infra_episodes", 0.0) + counts["infra_episodes"]
        if counts["compared"]:
            stats["rewards/disagreement"] = counts["disagree"] / counts["compared"]
        stats["time/judge_wait_s"] = stats.get("time/judge_wait_s", 0.0) + wait_s

    def metrics(self) -> dict[str, float]:
        """What the judges did since the last call: scores per source, failures, the wait after the rollout, the
        services' calls, cache hits and busy seconds (totals since the run started)."""
        out, self._stats = self._stats, {}
        services = list({id(s): s for s in self.services.values()}.values())
        out["judge/calls"] = float(sum(s.stats.calls for s in services))
        out["judge/cache_hits"] = float(sum(s.stats.cache_hits for s in services))
        out["judge/busy_s"] = sum(s.stats.busy_s for s in services)
        out["judge/max_in_flight"] = float(max((s.stats.max_in_flight for s in services), default=0))
        return out
