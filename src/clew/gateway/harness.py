"""The harness contract: your agent, unmodified but for its client, as a source of training episodes.

A harness is ``async def run(task, client) -> reward``: it gets one task (whatever ``tasks(seed)`` returns)
and an ``openai.AsyncOpenAI`` client whose base URL is one gateway session, runs its agent loop (any
framework: the OpenAI Agents SDK, LangGraph, smolagents, a hand-written loop), and returns the episode's
reward: a number, or a dict ``{"reward": R, "success": bool, "rewards": [per-call rewards], ...}`` whose other
keys are kept as the last turn's ``info``. Every call the agent made is a turn of the episode, recorded by
the gateway with its exact tokens (``clew.gateway.sessions``).

``Harness.collect`` runs ``group_size`` episodes of each task concurrently (at most ``concurrency`` at once),
one session each, and returns one ``Group`` per task, as the env rollout does, so credit, rows and the
learner are the same. A harness that raises or runs past ``timeout_s`` is a recorded, failed episode, never
a crash: ``policy`` (what the model wrote can have caused it), except a connection error or a 5xx from the
gateway, which is ``infra`` (dropped from credit like any infra failure). Seeds: each call draws from
``hash(gateway seed, session, turn)`` and the session key holds the rollout seed, so a rerun repeats.

Sampling is the run's: the session's ``temperature`` overrides what the client asks (the learner scores
the tokens at the rollout temperature, so a client's own temperature would make the log-probs disagree).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clew.envs.registry import load_entry_point
from clew.gateway.server import Gateway
from clew.plugins import load_plugin
from clew.rollout import Task
from clew.types import Episode, FailureType, Group

RunFn = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Outcome:
    """What a harness returned, read: the episode's reward, per-call rewards, a success verdict, extra info."""

    reward: float
    rewards: list[float] | None = None
    success: bool | None = None
    info: dict[str, Any] | None = None

    @classmethod
    def read(cls, value: Any) -> Outcome:
        if isinstance(value, bool) or not isinstance(value, int | float | dict):
            raise TypeError(f"a harness returns a number or a dict with 'reward', got {type(value).__name__}")
        if not isinstance(value, dict):
            return cls(float(value))
        if not isinstance(value.get("reward"), int | float) or isinstance(value.get("reward"), bool):
            raise TypeError("a harness's dict result needs a numeric 'reward'")
        rest = {k: v for k, v in value.items() if k not in ("reward", "rewards", "success")}
        rewards = [float(r) for r in value["rewards"]] if value.get("rewards") is not None else None
        success = bool(value["success"]) if value.get("success") is not None else None
        return cls(float(value["reward"]), rewards, success, rest)


class Harness:
    """``run`` and ``tasks`` (callables, or ``"module:name"`` entry points, plug-in style)."""

    def __init__(
        self, run: str | RunFn, tasks: str | Callable[[int], Any], timeout_s: float = 300.0, concurrency: int = 64
    ) -> None:
        self.run: RunFn = entry(run, "harness") if isinstance(run, str) else run
        self.tasks = entry(tasks, "task source") if isinstance(tasks, str) else tasks
        if not inspect.iscoroutinefunction(self.run):
            raise ValueError(f"the harness must be an async function run(task, client), got {self.run!r}")
        self.timeout_s, self.concurrency = timeout_s, concurrency

    def collect(
        self, gateway: Gateway, tasks: Sequence[Task], group_size: int, seed: int, offset: int = 0,
        temperature: float | None = None,
    ) -> list[Group]:  # fmt: skip
        """``group_size`` episodes per task, concurrently; one ``Group`` per task (members in order)."""
        groups = [Group(offset + i, t.task_id, t.seed) for i, t in enumerate(tasks)]
        jobs = []
        for i, task in enumerate(tasks):
            for member in range(group_size):
                key = f"r{seed}-g{offset + i}-m{member}"
                gateway.open_session(key, task.task_id, offset + i, task.seed, temperature=temperature)
                jobs.append((key, self.tasks(task.seed), groups[i]))
        episodes = asyncio.run(self._all(gateway, [(k, t) for k, t, _ in jobs]))
        for (_, _, group), episode in zip(jobs, episodes, strict=True):
            group.episodes.append(episode)
        return groups

    async def _all(self, gateway: Gateway, jobs: list[tuple[str, Any]]) -> list[Episode]:
        gate = asyncio.Semaphore(self.concurrency)
        # a thread per running episode (a sync agent in ``asyncio.to_thread``, then its close): the default pool
        # (cpus + 4 threads) would queue episodes while their timeout runs
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(self.concurrency + 4, "clew-harness"))

        async def one(key: str, task: Any) -> Episode:
            async with gate:
                return await self._episode(gateway, key, task)

        return list(await asyncio.gather(*(one(k, t) for k, t in jobs)))

    async def _episode(self, gateway: Gateway, key: str, task: Any) -> Episode:
        import openai

        client = openai.AsyncOpenAI(base_url=gateway.base_url(key), api_key="clew", max_retries=0)
        try:
            outcome = Outcome.read(await asyncio.wait_for(self.run(task, client), self.timeout_s))
        except Exception as exc:  # the harness failed or ran out of time: a recorded episode, typed
            error = "timeout" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"[:500]
            return await asyncio.to_thread(gateway.close_session, key, 0.0, None, error, failure_type(exc))
        finally:
            await client.close()
        try:
            episode = await asyncio.to_thread(gateway.close_session, key, outcome.reward, outcome.rewards)
        except ValueError as exc:  # per-call rewards that do not match the calls made: the harness's mistake
            return await asyncio.to_thread(gateway.close_session, key, 0.0, None, str(exc)[:500], "policy")
        if episode.turns:
            verdict = {} if outcome.success is None else {"success": outcome.success}
            episode.turns[-1].info.update({**(outcome.info or {}), **verdict})
        return episode


def entry(spec: str, kind: str) -> Any:
    """``module:name`` or ``path/to/file.py:name`` (the file imported as a plug-in, ``clew.plugins``)."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ValueError(f"{kind} {spec!r} must be 'module:name' or 'path/to/file.py:name'")
    if where.endswith(".py"):
        found = getattr(load_plugin(where), name, None)
        if not callable(found):
            raise ValueError(f"{where} has no {kind} {name!r}")
        return found
    return load_entry_point(spec, kind)


def failure_type(exc: BaseException) -> FailureType:
    """``infra`` when the gateway could not be reached or failed (5xx), else ``policy``."""
    import openai

    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
        return "infra"
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return "infra"
    return "policy"
